//! `--device`: where a command computes, and the feature extractor on it.

use anyhow::Context;
use crosspool::cpu::CpuBackend;
use crosspool::extract::{BatchRunner, CpuRunner, ExtractConfig, GpuRunner};
use crosspool::features::FeatureSpec;
use crosspool::gpu::{GpuContext, GpuOptions};
use crosspool::model::ModelWeights;
use crosspool::pca::Pca;
use crosspool::pipeline::Extractor;

/// Where a command computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// A real GPU if there is one; the CPU backend when the only adapter is a software one
    /// (lavapipe, llvmpipe, WARP) or none opens.
    Auto,
    /// The GPU adapter that --backend / --adapter pick, software ones included.
    Gpu,
    /// The native CPU backend, on all cores.
    Cpu,
}

/// The device a command computes on.
pub enum Engine {
    /// A GPU adapter (boxed: a context is large, the CPU variant empty).
    Gpu(Box<GpuContext>),
    /// The native CPU backend.
    Cpu,
}

impl Engine {
    /// Opens `device`.
    pub fn open(device: Device, opts: &GpuOptions) -> anyhow::Result<Self> {
        match device {
            Device::Cpu => Ok(Engine::Cpu),
            Device::Gpu => Ok(Engine::Gpu(Box::new(
                GpuContext::new(opts).context("opening the GPU")?,
            ))),
            Device::Auto => match GpuContext::new(opts) {
                Ok(ctx) if ctx.info.device_type != wgpu::DeviceType::Cpu => {
                    Ok(Engine::Gpu(Box::new(ctx)))
                }
                _ => Ok(Engine::Cpu),
            },
        }
    }

    /// The device in words, for logs and JSON summaries.
    pub fn describe(&self) -> String {
        match self {
            Engine::Gpu(ctx) => ctx.describe(),
            Engine::Cpu => format!("CPU backend, {} threads", rayon::current_num_threads()),
        }
    }

    /// The feature extractor for `spec` on this device.
    pub fn extractor(
        &self,
        weights: &ModelWeights,
        spec: FeatureSpec,
        pca: Option<&Pca>,
    ) -> anyhow::Result<DeviceExtractor<'_>> {
        Ok(match self {
            Engine::Gpu(ctx) => {
                let ctx: &GpuContext = ctx;
                DeviceExtractor::Gpu(ctx, Box::new(Extractor::new(ctx, weights, spec, pca)?))
            }
            Engine::Cpu => {
                DeviceExtractor::Cpu(Box::new(Extractor::new(&CpuBackend, weights, spec, pca)?))
            }
        })
    }
}

/// A feature extractor on the GPU or the CPU backend.
pub enum DeviceExtractor<'a> {
    /// On a GPU adapter.
    Gpu(&'a GpuContext, Box<Extractor<GpuContext>>),
    /// On the CPU backend.
    Cpu(Box<Extractor<CpuBackend>>),
}

impl DeviceExtractor<'_> {
    /// `(rows, cols)` of one image's feature at `size` x `size`.
    pub fn feature_shape(&self, size: usize) -> anyhow::Result<(usize, usize)> {
        Ok(match self {
            DeviceExtractor::Gpu(ctx, ex) => ex.feature_shape(*ctx, size)?,
            DeviceExtractor::Cpu(ex) => ex.feature_shape(&CpuBackend, size)?,
        })
    }

    /// What computes batches for `cfg` on this device.
    pub fn runner(&self, cfg: &ExtractConfig) -> anyhow::Result<Box<dyn BatchRunner + '_>> {
        Ok(match self {
            DeviceExtractor::Gpu(ctx, ex) => Box::new(GpuRunner::new(ctx, ex, cfg)?),
            DeviceExtractor::Cpu(ex) => Box::new(CpuRunner::new(ex, cfg)),
        })
    }
}
