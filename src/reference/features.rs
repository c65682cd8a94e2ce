use super::Reduced;
use crate::error::Result;
use crate::features::{FeatureSpec, Representation};
use crate::model::ModelWeights;
use crate::pca::Pca;
use crate::pooling::{pyramid_regions, LocalWindow};
use crate::shape::Shape4;

/// The feature pipeline on the CPU: network, optional PCA projection, pooling and
/// normalisation. Returns `(rows, cols, values)` with values `[n][rows][cols]`.
pub fn features(
    weights: &ModelWeights,
    spec: &FeatureSpec,
    pca: Option<&Pca>,
    input: &[f32],
    shape: Shape4,
) -> Result<(usize, usize, Vec<f32>)> {
    let layers = spec.repr.layers();
    let acts = super::network_forward(weights, input, shape, &layers)?;
    let (mut xs, mut x) = acts[0].clone();
    let mut win = spec.repr.window();
    if let Some(p) = pca {
        let (s, r) = super::conv2d(&x, xs, &p.to_conv()?)?;
        (xs, x, win) = (s, r.values, LocalWindow::UNIT);
    }
    let (rows, cols, Reduced { mut values, .. }) = match &spec.repr {
        Representation::CrossLayer { .. } => {
            let (gs, g) = &acts[1];
            let r = super::cross_layer(g, *gs, LocalWindow::UNIT, &x, xs, win, 1)?;
            (gs.c, win.feature_len(xs.c), r)
        }
        Representation::Gram { .. } => {
            let f = win.feature_len(xs.c);
            (f, f, super::cross_layer(&x, xs, win, &x, xs, win, 1)?)
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
