//! The whole feature pipeline on the GPU in one submission per batch: network forward,
//! optional PCA projection, pooling, normalisation.

use super::network::{GpuNetwork, Workspace};
use crate::error::{Error, Result};
use crate::features::{FeatureSpec, Representation};
use crate::gpu::crosslayer::{CrossLayerKernel, Guidance};
use crate::gpu::GpuContext;
use crate::gpu::NormalizeKernel;
use crate::gpu::{Conv2dKernel, GpuConv2d};
use crate::gpu::{GpuFeatures, GpuTensor};
use crate::gpu::{GpuRegions, RegionPoolKernel};
use crate::model::ModelWeights;
use crate::pca::Pca;
use crate::pooling::{pyramid_regions, LocalWindow, RegionPoolMode};
use crate::shape::Shape4;

/// A network, its pooling stage and the kernels they use, ready to extract features.
pub struct Extractor {
    net: GpuNetwork,
    spec: FeatureSpec,
    pca: Option<GpuConv2d>,
    conv: Conv2dKernel,
    cross: CrossLayerKernel,
    normalize: NormalizeKernel,
    region: RegionPoolKernel,
}

/// Buffers for extracting batches of one input shape.
pub struct ExtractWorkspace {
    input: Shape4,
    net: Workspace,
    projected: Option<GpuTensor>,
    /// Region pooling only: the pyramid's cells.
    regions: Option<GpuRegions>,
    features: GpuFeatures,
    /// Cross-layer only: per image, the sum of each channel of layer t+1 over the map, which
    /// retrieval uses to choose the query's pooling channels (the paper's eq. 3).
    guide_sums: Option<GuideSums>,
}

/// Sums of every channel of layer t+1 over its whole map.
struct GuideSums {
    sums: GpuFeatures,
    /// Units of the map (to turn sums into means).
    units: usize,
    whole_map: GpuRegions,
}

impl ExtractWorkspace {
    fn regions(&self) -> Result<&GpuRegions> {
        self.regions
            .as_ref()
            .ok_or_else(|| Error::Config("region pooling without regions".into()))
    }

    /// The input shape this workspace was made for.
    pub fn input_shape(&self) -> Shape4 {
        self.input
    }

    /// The features of the last batch extracted.
    pub fn features(&self) -> &GpuFeatures {
        &self.features
    }

    /// Cross-layer features only: the mean activation of every channel of layer t+1 for each
    /// image of the last batch, `[images][D_{t+1}]`, downloaded (waits for the GPU).
    pub fn guide_means(&self, ctx: &GpuContext) -> Result<Option<Vec<f32>>> {
        match &self.guide_sums {
            Some(g) => {
                let mut v = g.sums.download(ctx)?;
                let inv = 1.0 / g.units as f32;
                v.iter_mut().for_each(|x| *x *= inv);
                Ok(Some(v))
            }
            None => Ok(None),
        }
    }
}

impl Extractor {
    /// Uploads the network and, if given, the PCA (which must be fitted on the spec's local
    /// layer and window).
    pub fn new(
        ctx: &GpuContext,
        weights: &ModelWeights,
        spec: FeatureSpec,
        pca: Option<&Pca>,
    ) -> Result<Self> {
        spec.validate(weights.arch)?;
        let pca = match pca {
            Some(p) => {
                let local = spec.repr.local_layer();
                if p.layer != local
                    || p.window != spec.repr.window()
                    || p.arch != weights.arch.name()
                {
                    return Err(Error::Config(format!(
                        "the PCA was fitted on {} {} {}x{} but the features use {} {} {}x{}",
                        p.arch,
                        p.layer,
                        p.window.h,
                        p.window.w,
                        weights.arch,
                        local,
                        spec.repr.window().h,
                        spec.repr.window().w
                    )));
                }
                Some(GpuConv2d::upload(ctx, &p.to_conv()?)?)
            }
            None => None,
        };
        Ok(Extractor {
            net: GpuNetwork::new(ctx, weights)?,
            spec,
            pca,
            conv: Conv2dKernel::new(ctx)?,
            cross: CrossLayerKernel::new(ctx)?,
            normalize: NormalizeKernel::new(ctx)?,
            region: RegionPoolKernel::new(ctx)?,
        })
    }

    /// The feature spec.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// `(rows, values per row)` of one image's feature at `size` x `size` input.
    pub fn feature_shape(&self, ctx: &GpuContext, size: usize) -> Result<(usize, usize)> {
        let probe = self.workspace(ctx, Shape4::new(1, size, size, 3))?;
        Ok((probe.features.rows, probe.features.cols))
    }

    /// Allocates buffers for batches of `input` shape.
    pub fn workspace(&self, ctx: &GpuContext, input: Shape4) -> Result<ExtractWorkspace> {
        let layers = self.spec.repr.layers();
        let net = self.net.workspace(ctx, input, &layers)?;
        let local = net.outputs()[0].shape;
        if let [l, g] = net.outputs() {
            if (l.shape.h, l.shape.w) != (g.shape.h, g.shape.w) {
                return Err(Error::Config(format!(
                    "layers {} and {} have different grids ({}x{} and {}x{}) and cannot be pooled across",
                    layers[0], layers[1], l.shape.h, l.shape.w, g.shape.h, g.shape.w
                )));
            }
        }
        let projected = match &self.pca {
            Some(p) => Some(GpuTensor::new(
                ctx,
                p.spec.output_shape(local)?,
                "pca projection",
            )?),
            None => None,
        };
        // With PCA the window is already folded into the projection.
        let (x_c, win) = match &projected {
            Some(t) => (t.shape.c, LocalWindow::UNIT),
            None => (local.c, self.spec.repr.window()),
        };
        let mut regions = None;
        let (rows, cols) = match &self.spec.repr {
            Representation::CrossLayer { .. } => (net.outputs()[1].shape.c, win.feature_len(x_c)),
            Representation::Gram { .. } => (win.feature_len(x_c), win.feature_len(x_c)),
            Representation::Region { levels, .. } => {
                let cells = pyramid_regions(local.h, local.w, *levels)?;
                let rows = cells.len();
                regions = Some(GpuRegions::upload(ctx, &cells)?);
                (rows, x_c)
            }
        };
        let per_image = (rows * cols) as u64 * 4;
        if per_image > ctx.limits.max_buffer_size {
            return Err(Error::DeviceLimit {
                what: format!("the feature of one image ({rows} x {cols} values)"),
                needed: per_image,
                limit: ctx.limits.max_buffer_size,
                limit_name: "max_buffer_size",
                hint: "use a smaller --window, or reduce the local features with a PCA (fit-pca --dims)",
            });
        }
        let features = GpuFeatures::new(ctx, input.n, rows, cols, "features")?;
        let guide_sums = match &self.spec.repr {
            Representation::CrossLayer { .. } => {
                let g = net.outputs()[1].shape;
                Some(GuideSums {
                    sums: GpuFeatures::new(ctx, input.n, 1, g.c, "guide sums")?,
                    units: g.h * g.w,
                    whole_map: GpuRegions::upload(ctx, &[[0, g.h as u32, 0, g.w as u32]])?,
                })
            }
            _ => None,
        };
        Ok(ExtractWorkspace {
            input,
            net,
            projected,
            regions,
            features,
            guide_sums,
        })
    }

    /// Records the extraction of `input` into `enc`.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        input: &GpuTensor,
        ws: &ExtractWorkspace,
    ) -> Result<()> {
        if input.shape != ws.input {
            return Err(Error::shape(
                "extract",
                format!(
                    "workspace was made for {} but the input is {}",
                    ws.input, input.shape
                ),
            ));
        }
        self.net.record(ctx, enc, input, &ws.net)?;
        let outs = ws.net.outputs();
        let (x, win) = match (&self.pca, &ws.projected) {
            (Some(p), Some(t)) => {
                self.conv.record(ctx, enc, p, &outs[0], t)?;
                (t, LocalWindow::UNIT)
            }
            _ => (&outs[0], self.spec.repr.window()),
        };
        match &self.spec.repr {
            Representation::CrossLayer { .. } => self.cross.record(
                ctx,
                enc,
                Guidance::Layer(&outs[1], LocalWindow::UNIT),
                x,
                win,
                1,
                &ws.features,
                false,
            )?,
            Representation::Gram { .. } => self.cross.record(
                ctx,
                enc,
                Guidance::Layer(x, win),
                x,
                win,
                1,
                &ws.features,
                false,
            )?,
            Representation::Region { mode, .. } => {
                self.region
                    .record(ctx, enc, x, ws.regions()?, *mode, &ws.features)?
            }
        }
        if let Some(g) = &ws.guide_sums {
            self.region.record(
                ctx,
                enc,
                &outs[1],
                &g.whole_map,
                RegionPoolMode::Sum,
                &g.sums,
            )?;
        }
        self.normalize
            .record(ctx, enc, &ws.features, self.spec.norm)
    }

    /// Runs each stage as its own submission and waits for it: `(stage, seconds, flops)` for
    /// every network layer, the PCA projection, pooling and normalisation.
    pub fn profile(
        &self,
        ctx: &GpuContext,
        input: &GpuTensor,
        ws: &ExtractWorkspace,
    ) -> Result<Vec<(String, f64, f64)>> {
        let mut stages = self.net.profile(ctx, input, &ws.net)?;
        let outs = ws.net.outputs();
        let mut timed = |name: &str,
                         flops: f64,
                         f: &dyn Fn(&mut wgpu::CommandEncoder) -> Result<()>|
         -> Result<()> {
            let t = std::time::Instant::now();
            ctx.submit(name, f)?;
            ctx.wait(name)?;
            stages.push((name.to_string(), t.elapsed().as_secs_f64(), flops));
            Ok(())
        };
        let (x, win) = match (&self.pca, &ws.projected) {
            (Some(p), Some(t)) => {
                timed("pca", p.spec.flops(outs[0].shape)?, &|enc| {
                    self.conv.record(ctx, enc, p, &outs[0], t)
                })?;
                (t, LocalWindow::UNIT)
            }
            _ => (&outs[0], self.spec.repr.window()),
        };
        let f = &ws.features;
        let units = (x.shape.n * x.shape.h * x.shape.w) as f64;
        let pool_flops = match &self.spec.repr {
            Representation::Region { .. } => units * x.shape.c as f64,
            _ => 2.0 * units * (f.rows * f.cols) as f64,
        };
        timed("pooling", pool_flops, &|enc| match &self.spec.repr {
            Representation::CrossLayer { .. } => self.cross.record(
                ctx,
                enc,
                Guidance::Layer(&outs[1], LocalWindow::UNIT),
                x,
                win,
                1,
                f,
                false,
            ),
            Representation::Gram { .. } => {
                self.cross
                    .record(ctx, enc, Guidance::Layer(x, win), x, win, 1, f, false)
            }
            Representation::Region { mode, .. } => {
                self.region.record(ctx, enc, x, ws.regions()?, *mode, f)
            }
        })?;
        timed(
            "normalize",
            4.0 * (f.images * f.rows * f.cols) as f64,
            &|enc| self.normalize.record(ctx, enc, f, self.spec.norm),
        )?;
        Ok(stages)
    }

    /// Extracts features of `input` and submits; they are left in `ws.features()`.
    pub fn extract<'w>(
        &self,
        ctx: &GpuContext,
        input: &GpuTensor,
        ws: &'w ExtractWorkspace,
    ) -> Result<&'w GpuFeatures> {
        ctx.submit("extract", |enc| self.record(ctx, enc, input, ws))?;
        Ok(&ws.features)
    }
}
