//! The whole feature pipeline in one submission per batch: network forward, optional PCA
//! projection, pooling, normalisation — on any [`Backend`].

use super::backend::{Backend, CrossLayer, Guide, Op};
use super::network::{Network, Stage, Workspace};
use crate::error::{Error, Result};
use crate::features::{FeatureSpec, GridMatch, Representation, ADDED_GUIDE};
use crate::gpu::{Dtype, GpuContext};
use crate::model::{Arch, ModelWeights};
use crate::pca::Pca;
use crate::pooling::{pyramid_regions, LocalWindow, Quantization, RegionPoolMode};
use crate::shape::Shape4;
use crate::weights::Conv2dWeights;

/// A network, its pooling stage and the kernels they use, ready to extract features.
pub struct Extractor<B: Backend = GpuContext> {
    arch: Arch,
    net: Network<B>,
    spec: FeatureSpec,
    pca: Option<B::Conv>,
    /// AConv pooling only: the added 1x1 convolution whose activations guide the pooling.
    aconv: Option<B::Conv>,
    kernels: B::Kernels,
}

/// Buffers for extracting batches of one input shape.
pub struct ExtractWorkspace<B: Backend = GpuContext> {
    input: Shape4,
    net: Workspace<B>,
    projected: Option<B::Tensor>,
    /// FC-Conv pooling only: layer t pooled within each receptive field of layer t+1.
    fields: Option<FieldPooling<B>>,
    /// Region pooling only: the pyramid's cells.
    regions: Option<B::Regions>,
    features: B::Features,
    /// AConv pooling only: the added layer's activations on the local layer.
    added_guide: Option<B::Tensor>,
    /// Cross-layer only: per image, the sum of each channel of layer t+1 over the map, which
    /// retrieval uses to choose the query's pooling channels (the paper's eq. 3).
    guide_sums: Option<GuideSums<B>>,
}

/// Layer t summed within each receptive field of layer t+1 and square-rooted: the local
/// features of FC-Conv pooling, a map on layer t+1's grid.
struct FieldPooling<B: Backend> {
    /// One region of layer t per unit of layer t+1, row-major.
    fields: B::Regions,
    pooled: B::Tensor,
}

/// Sums of every channel of layer t+1 over its whole map.
struct GuideSums<B: Backend> {
    sums: B::Features,
    /// Units of the map (to turn sums into means).
    units: usize,
    whole_map: B::Regions,
}

impl<B: Backend> ExtractWorkspace<B> {
    fn regions(&self) -> Result<&B::Regions> {
        self.regions
            .as_ref()
            .ok_or_else(|| Error::Config("region pooling without regions".into()))
    }

    /// The input shape this workspace was made for.
    pub fn input_shape(&self) -> Shape4 {
        self.input
    }

    /// The features of the last batch extracted.
    pub fn features(&self) -> &B::Features {
        &self.features
    }

    /// Per image of the last batch, whether an activation overflowed f16 (all false in f32;
    /// waits for the work).
    pub fn overflowed(&self, ctx: &B) -> Result<Vec<bool>> {
        self.net.overflowed(ctx)
    }

    /// Cross-layer features only: the mean activation of every channel of layer t+1 for each
    /// image of the last batch, `[images][D_{t+1}]`, read back (waits for the work).
    pub fn guide_means(&self, ctx: &B) -> Result<Option<Vec<f32>>> {
        match &self.guide_sums {
            Some(g) => {
                let mut v = ctx.download(&g.sums)?;
                let inv = 1.0 / g.units as f32;
                v.iter_mut().for_each(|x| *x *= inv);
                Ok(Some(v))
            }
            None => Ok(None),
        }
    }
}

impl<B: Backend> Extractor<B> {
    /// Makes the network ready and, if given, the PCA (which must be fitted on the spec's
    /// local layer and window).
    pub fn new(
        ctx: &B,
        weights: &ModelWeights,
        spec: FeatureSpec,
        pca: Option<&Pca>,
    ) -> Result<Self> {
        Self::with_storage(ctx, weights, spec, pca, Dtype::F32)
    }

    /// [`Extractor::new`] with the network's weights and intermediate activations stored as
    /// `storage`. The layers the features read, the PCA and the pooling stay f32.
    pub fn with_storage(
        ctx: &B,
        weights: &ModelWeights,
        spec: FeatureSpec,
        pca: Option<&Pca>,
        storage: Dtype,
    ) -> Result<Self> {
        spec.validate(weights.arch)?;
        let receptive = matches!(
            spec.repr,
            Representation::CrossLayer {
                grid: GridMatch::ReceptiveField,
                ..
            }
        );
        if receptive && pca.is_some() {
            return Err(Error::Config(
                "FC-Conv pooling crosses layer t's sums over receptive fields, which a PCA fitted on layer t's units does not describe; leave out --pca".into(),
            ));
        }
        let pca = match pca {
            Some(p) => {
                let local = spec.repr.local_layer();
                if p.layer != local
                    || p.window != spec.repr.window()
                    || p.arch != weights.arch.name()
                {
                    return Err(Error::Config(format!(
                        "the PCA was fitted on {} {} {} but the features use {} {} {}",
                        p.arch,
                        p.layer,
                        p.window,
                        weights.arch,
                        local,
                        spec.repr.window()
                    )));
                }
                Some(ctx.conv_layer(&p.to_conv()?)?)
            }
            None => None,
        };
        Ok(Extractor {
            arch: weights.arch,
            net: Network::with_storage(ctx, weights, storage)?,
            spec,
            pca,
            aconv: None,
            kernels: ctx.kernels()?,
        })
    }

    /// Adds the AConv layer (from `train-aconv`) that the spec's [`crate::features::ADDED_GUIDE`]
    /// names: a convolution on the local layer whose activations guide the pooling.
    pub fn with_aconv(mut self, ctx: &B, conv: &Conv2dWeights) -> Result<Self> {
        if !self.spec.repr.added_guide() {
            return Err(Error::Config(format!(
                "an AConv layer was given but the features ({}) do not pool with it (--layers {},{ADDED_GUIDE})",
                self.spec.repr,
                self.spec.repr.local_layer()
            )));
        }
        self.aconv = Some(ctx.conv_layer(conv)?);
        Ok(self)
    }

    /// How the network stores weights and intermediate activations.
    pub fn storage(&self) -> Dtype {
        self.net.storage()
    }

    /// The feature spec.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// `(rows, values per row)` of one image's feature at `size` x `size` input.
    pub fn feature_shape(&self, ctx: &B, size: usize) -> Result<(usize, usize)> {
        let probe = self.workspace(ctx, Shape4::new(1, size, size, 3))?;
        let (_, rows, cols) = B::dims_of(&probe.features);
        Ok((rows, cols))
    }

    /// Allocates buffers for batches of `input` shape.
    pub fn workspace(&self, ctx: &B, input: Shape4) -> Result<ExtractWorkspace<B>> {
        let layers = self.spec.repr.layers();
        let net = self.net.workspace(ctx, input, &layers)?;
        let mut shapes: Vec<Shape4> = net.outputs().iter().map(B::shape_of).collect();
        let added_guide = match (&self.aconv, self.spec.repr.added_guide()) {
            (Some(conv), true) => {
                let t = ctx.tensor(B::conv_spec(conv).output_shape(shapes[0])?, "aconv activations")?;
                shapes.push(B::shape_of(&t));
                Some(t)
            }
            (None, true) => {
                return Err(Error::Config(format!(
                    "the features pool with the added AConv layer ({}) but none was given (--aconv FILE from train-aconv)",
                    self.spec.repr
                )))
            }
            _ => None,
        };
        let mut local = shapes[0];
        let mut fields = None;
        if let Representation::CrossLayer { grid, .. } = &self.spec.repr {
            let (l, g) = (shapes[0], shapes[1]);
            match grid {
                GridMatch::Same if (l.h, l.w) != (g.h, g.w) => {
                    return Err(Error::Config(format!(
                        "layers {} and {} have different grids ({}x{} and {}x{}) and cannot be pooled unit by unit (--pooling fc-conv pools the first within each receptive field of the second)",
                        layers[0], layers[1], l.h, l.w, g.h, g.w
                    )));
                }
                GridMatch::Same => {}
                GridMatch::ReceptiveField => {
                    let boxes =
                        self.arch
                            .receptive_fields(layers[0], layers[1], (l.h, l.w), (g.h, g.w))?;
                    local = Shape4::new(l.n, g.h, g.w, l.c);
                    fields = Some(FieldPooling {
                        fields: ctx.regions(&boxes)?,
                        pooled: ctx.tensor(local, "receptive-field sums")?,
                    });
                }
            }
        }
        let projected = match &self.pca {
            Some(p) => Some(ctx.tensor(B::conv_spec(p).output_shape(local)?, "pca projection")?),
            None => None,
        };
        // With PCA the window is already folded into the projection.
        let (x_c, win) = match &projected {
            Some(t) => (B::shape_of(t).c, LocalWindow::UNIT),
            None => (local.c, self.spec.repr.window()),
        };
        let mut regions = None;
        let (rows, cols) = match &self.spec.repr {
            Representation::CrossLayer { .. } => (shapes[1].c, win.feature_len(x_c)),
            Representation::Gram { .. } => (win.feature_len(x_c), win.feature_len(x_c)),
            Representation::Region { levels, .. } => {
                let cells = pyramid_regions(local.h, local.w, *levels)?;
                let rows = cells.len();
                regions = Some(ctx.regions(&cells)?);
                (rows, x_c)
            }
        };
        let features = ctx
            .features((input.n, rows, cols), "features")
            .map_err(|e| match e {
                // One image's feature alone over the limit: the batch is not what to change.
                Error::DeviceLimit {
                    limit, limit_name, ..
                } if (rows * cols) as u64 * 4 > limit => Error::DeviceLimit {
                    what: format!("the feature of one image ({rows} x {cols} values)"),
                    needed: (rows * cols) as u64 * 4,
                    limit,
                    limit_name,
                    hint: "use a smaller --window, or reduce the local features with a PCA (fit-pca --dims)",
                },
                other => other,
            })?;
        let guide_sums = match &self.spec.repr {
            Representation::CrossLayer { .. } => {
                let g = shapes[1];
                Some(GuideSums {
                    sums: ctx.features((input.n, 1, g.c), "guide sums")?,
                    units: g.h * g.w,
                    whole_map: ctx.regions(&[[0, g.h as u32, 0, g.w as u32]])?,
                })
            }
            _ => None,
        };
        Ok(ExtractWorkspace {
            input,
            net,
            projected,
            fields,
            regions,
            features,
            added_guide,
            guide_sums,
        })
    }

    /// The guide of cross-layer pooling: layer t+1, or the added AConv layer's activations.
    fn guide<'w>(&self, ws: &'w ExtractWorkspace<B>) -> &'w B::Tensor {
        ws.added_guide
            .as_ref()
            .unwrap_or_else(|| &ws.net.outputs()[1])
    }

    /// The local features pooled (layer t, or its PCA projection) and their window.
    fn local_features<'w>(&self, ws: &'w ExtractWorkspace<B>) -> (&'w B::Tensor, LocalWindow) {
        match (&ws.projected, &ws.fields) {
            (Some(t), _) => (t, LocalWindow::UNIT),
            (None, Some(f)) => (&f.pooled, LocalWindow::UNIT),
            (None, None) => (&ws.net.outputs()[0], self.spec.repr.window()),
        }
    }

    /// Records the pooling of the local features into `out` and its normalisation (one
    /// operation for cross-layer pooling, which a backend may run as one pass).
    fn record_pooling(
        &self,
        ctx: &B,
        r: &mut B::Recorder,
        ws: &ExtractWorkspace<B>,
        out: &B::Features,
    ) -> Result<()> {
        let (x, win) = self.local_features(ws);
        let (k, norm) = (&self.kernels, self.spec.norm);
        let op = match &self.spec.repr {
            Representation::CrossLayer { channel, .. } => {
                let guide = Guide::Layer(self.guide(ws), LocalWindow::UNIT);
                CrossLayer::new(guide, x, win).pooled(*channel)
            }
            Representation::Gram { .. } => CrossLayer::new(Guide::Layer(x, win), x, win),
            Representation::Region { mode, .. } => {
                ctx.run(k, r, Op::RegionPool(x, ws.regions()?, *mode, out))?;
                return ctx.run(k, r, Op::Normalize(out, norm));
            }
        };
        ctx.cross_layer_normalized(k, r, op, out, norm)
    }

    /// Records the extraction of `input` into `r`.
    pub fn record(
        &self,
        ctx: &B,
        r: &mut B::Recorder,
        input: &B::Tensor,
        ws: &ExtractWorkspace<B>,
    ) -> Result<()> {
        if B::shape_of(input) != ws.input {
            return Err(Error::shape(
                "extract",
                format!(
                    "workspace was made for {} but the input is {}",
                    ws.input,
                    B::shape_of(input)
                ),
            ));
        }
        self.net.record(ctx, r, input, &ws.net)?;
        let (outs, k) = (ws.net.outputs(), &self.kernels);
        if let (Some(p), Some(t)) = (&self.pca, &ws.projected) {
            ctx.run(k, r, Op::conv(p, &outs[0], t))?;
        }
        if let Some(f) = &ws.fields {
            ctx.run(k, r, Op::FieldPool(&outs[0], &f.fields, &f.pooled))?;
        }
        if let (Some(c), Some(t)) = (&self.aconv, &ws.added_guide) {
            ctx.run(k, r, Op::conv(c, &outs[0], t))?;
        }
        if let Some(g) = &ws.guide_sums {
            let whole = Op::RegionPool(self.guide(ws), &g.whole_map, RegionPoolMode::Sum, &g.sums);
            ctx.run(k, r, whole)?;
        }
        self.record_pooling(ctx, r, ws, &ws.features)
    }

    /// Runs each stage as its own submission and waits for it: `(stage, seconds, flops)` for
    /// every network layer, the PCA projection, and pooling with its normalisation (one stage).
    pub fn profile(
        &self,
        ctx: &B,
        input: &B::Tensor,
        ws: &ExtractWorkspace<B>,
    ) -> Result<Vec<Stage>> {
        let mut stages = self.net.profile(ctx, input, &ws.net)?;
        let outs = ws.net.outputs();
        let mut timed = |name: &str,
                         flops: f64,
                         f: &mut dyn FnMut(&mut B::Recorder) -> Result<()>|
         -> Result<()> {
            let t = std::time::Instant::now();
            ctx.submit(name, f)?;
            ctx.wait(name)?;
            stages.push(Stage {
                name: name.to_string(),
                seconds: t.elapsed().as_secs_f64(),
                flops,
                variant: None,
            });
            Ok(())
        };
        if let (Some(p), Some(t)) = (&self.pca, &ws.projected) {
            let flops = B::conv_spec(p).flops(B::shape_of(&outs[0]))?;
            timed("pca", flops, &mut |r| {
                ctx.run(&self.kernels, r, Op::conv(p, &outs[0], t))
            })?;
        }
        if let Some(f) = &ws.fields {
            timed(
                "field pooling",
                B::shape_of(&outs[0]).len() as f64,
                &mut |r| {
                    ctx.run(
                        &self.kernels,
                        r,
                        Op::FieldPool(&outs[0], &f.fields, &f.pooled),
                    )
                },
            )?;
        }
        if let (Some(c), Some(t)) = (&self.aconv, &ws.added_guide) {
            let flops = B::conv_spec(c).flops(B::shape_of(&outs[0]))?;
            timed("aconv", flops, &mut |r| {
                ctx.run(&self.kernels, r, Op::conv(c, &outs[0], t))
            })?;
        }
        let (x, _) = self.local_features(ws);
        let xs = B::shape_of(x);
        let (images, rows, cols) = B::dims_of(&ws.features);
        let units = (xs.n * xs.h * xs.w) as f64;
        let pool_flops = match &self.spec.repr {
            Representation::Region { .. } => units * xs.c as f64,
            _ => 2.0 * units * (rows * cols) as f64,
        };
        let norm_flops = 4.0 * (images * rows * cols) as f64;
        timed("pooling+normalize", pool_flops + norm_flops, &mut |r| {
            self.record_pooling(ctx, r, ws, &ws.features)
        })?;
        Ok(stages)
    }

    /// Extracts features of `input` and submits; they are left in `ws.features()`.
    pub fn extract<'w>(
        &self,
        ctx: &B,
        input: &B::Tensor,
        ws: &'w ExtractWorkspace<B>,
    ) -> Result<&'w B::Features> {
        ctx.submit("extract", &mut |r| self.record(ctx, r, input, ws))?;
        Ok(&ws.features)
    }

    /// [`Extractor::extract`], the features then packed into `codes` (from
    /// [`crate::pipeline::Storage::codes`] for `ws.features()` and `q`), in one submission.
    pub fn extract_codes(
        &self,
        ctx: &B,
        input: &B::Tensor,
        ws: &ExtractWorkspace<B>,
        q: Quantization,
        codes: &B::Codes,
    ) -> Result<()> {
        ctx.submit("extract", &mut |r| {
            self.record(ctx, r, input, ws)?;
            ctx.run(&self.kernels, r, Op::Quantize(&ws.features, q, codes))
        })
    }
}
