use super::Reduced;
use crate::error::{Error, Result};
use crate::features::{FeatureSpec, GridMatch, Representation};
use crate::model::ModelWeights;
use crate::pca::Pca;
use crate::pooling::{pyramid_regions, ChannelPooling, LocalWindow};
use crate::shape::Shape4;
use crate::weights::Conv2dWeights;

/// The feature pipeline on the CPU: network, optional PCA projection, pooling and
/// normalisation. Returns `(rows, cols, values)` with values `[n][rows][cols]`.
pub fn features(
    weights: &ModelWeights,
    spec: &FeatureSpec,
    pca: Option<&Pca>,
    input: &[f32],
    shape: Shape4,
) -> Result<(usize, usize, Vec<f32>)> {
    features_with_aconv(weights, spec, pca, None, input, shape)
}

/// [`features`], with the added AConv layer when the spec pools with it: its activations on
/// the local layer are the guide.
pub fn features_with_aconv(
    weights: &ModelWeights,
    spec: &FeatureSpec,
    pca: Option<&Pca>,
    aconv: Option<&Conv2dWeights>,
    input: &[f32],
    shape: Shape4,
) -> Result<(usize, usize, Vec<f32>)> {
    let layers = spec.repr.layers();
    let mut acts = super::network_forward(weights, input, shape, &layers)?;
    if spec.repr.added_guide() {
        let conv = aconv.ok_or_else(|| {
            Error::Config("the features pool with the added AConv layer; none was given".into())
        })?;
        let (s, r) = super::conv2d(&acts[0].1, acts[0].0, conv)?;
        acts.push((s, r.values));
    }
    let (mut xs, mut x) = acts[0].clone();
    let mut win = spec.repr.window();
    if let Some(p) = pca {
        let (s, r) = super::conv2d(&x, xs, &p.to_conv()?)?;
        (xs, x, win) = (s, r.values, LocalWindow::UNIT);
    }
    if let Representation::CrossLayer {
        local,
        guide,
        grid: GridMatch::ReceptiveField,
        ..
    } = &spec.repr
    {
        let gs = acts[1].0;
        let fields = weights
            .arch
            .receptive_fields(local, guide, (xs.h, xs.w), (gs.h, gs.w))?;
        x = super::field_pool(&x, xs, &fields).0;
        xs = Shape4::new(xs.n, gs.h, gs.w, xs.c);
    }
    let sum = ChannelPooling::Sum;
    let (rows, cols, Reduced { mut values, .. }) = match &spec.repr {
        Representation::CrossLayer { channel, .. } => {
            let (gs, g) = &acts[1];
            let r = super::cross_layer(g, *gs, LocalWindow::UNIT, &x, xs, win, 1, *channel)?;
            (gs.c, win.feature_len(xs.c), r)
        }
        Representation::Gram { .. } => {
            let f = win.feature_len(xs.c);
            (f, f, super::cross_layer(&x, xs, win, &x, xs, win, 1, sum)?)
        }
        Representation::Region { mode, levels, .. } => {
            let regions = pyramid_regions(xs.h, xs.w, *levels)?;
            let v = super::region_pool(&x, xs, &regions, *mode);
            (
                regions.len(),
                xs.c,
                Reduced {
                    magnitude: vec![],
                    values: v,
                },
            )
        }
    };
    super::normalize(&mut values, rows, cols, spec.norm);
    Ok((rows, cols, values))
}
