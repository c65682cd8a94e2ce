//! Where work runs: a GPU adapter or the native CPU backend (`--device`, `--devices`), and
//! the feature extractor on it. The command line and the Python package open devices here.

use crate::cpu::{ConvKernel, CpuBackend};
use crate::error::{Error, Result};
use crate::extract::{BatchRunner, CpuRunner, ExtractConfig, GpuRunner};
use crate::features::FeatureSpec;
use crate::gpu::{Dtype, GpuContext, GpuOptions};
use crate::model::ModelWeights;
use crate::pca::Pca;
use crate::pipeline::{Backend, Extractor};
use crate::shape::Shape4;
use crate::weights::Conv2dWeights;

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

/// How a GPU stores weights and activations between layers (`--precision`). Sums are f32
/// in every case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// f32 throughout: the features the tests hold to the reference within f32 rounding.
    #[default]
    F32,
    /// f16 weights and intermediate activations (the layers the features read stay f32);
    /// needs a GPU with shader-f16. An image whose activations overflow f16 fails.
    F16,
    /// f16 on a hardware GPU with shader-f16, f32 elsewhere (software adapters and the CPU
    /// backend, where f16 storage gains nothing).
    Auto,
}

/// The device a command computes on.
pub enum Engine {
    /// A GPU adapter (boxed: a context is large, the CPU variant small).
    Gpu(Box<GpuContext>),
    /// The native CPU backend, its convolution kernel resolved from `CROSSPOOL_CPU_CONV`.
    Cpu(CpuBackend),
}

impl Engine {
    /// Opens `device`.
    pub fn open(device: Device, opts: &GpuOptions) -> Result<Self> {
        // A bad CROSSPOOL_CPU_CONV fails here, before any work, whichever device runs.
        let cpu = Engine::Cpu(CpuBackend::with_conv_kernel(ConvKernel::from_env()?));
        match device {
            Device::Cpu => Ok(cpu),
            Device::Gpu => Ok(Engine::Gpu(Box::new(GpuContext::new(opts)?))),
            Device::Auto => match GpuContext::new(opts) {
                Ok(ctx) if ctx.info.device_type != wgpu::DeviceType::Cpu => {
                    Ok(Engine::Gpu(Box::new(ctx)))
                }
                _ => Ok(cpu),
            },
        }
    }

    /// The device in words, for logs and JSON summaries.
    pub fn describe(&self) -> String {
        match self {
            Engine::Gpu(ctx) => ctx.describe(),
            Engine::Cpu(cpu) => cpu_description(cpu),
        }
    }

    /// The storage `precision` gives on this device.
    pub fn storage_for(&self, precision: Precision) -> Result<Dtype> {
        match (self, precision) {
            (_, Precision::F32) => Ok(Dtype::F32),
            (Engine::Cpu(_), Precision::F16) => Err(Error::Config(
                "--precision f16 runs on a GPU with shader-f16; the CPU backend computes in f32 (use --device gpu, or --precision f32)".into(),
            )),
            (Engine::Cpu(_), Precision::Auto) => Ok(Dtype::F32),
            (Engine::Gpu(ctx), Precision::F16) => {
                ctx.require_f16("--precision f16")?;
                Ok(Dtype::F16)
            }
            (Engine::Gpu(ctx), Precision::Auto) => Ok(
                if ctx.has_f16() && ctx.info.device_type != wgpu::DeviceType::Cpu {
                    Dtype::F16
                } else {
                    Dtype::F32
                },
            ),
        }
    }

    /// What `precision` runs on this device, in words (`crosspool info`). On a device with
    /// cooperative matrices this runs their check against the scalar f16 kernel.
    pub fn precision_path(&self, precision: Precision) -> String {
        match (self.storage_for(precision), self) {
            (Err(e), _) => format!("unavailable: {e}"),
            (Ok(Dtype::F32), _) => "f32 storage and sums".into(),
            (Ok(Dtype::F16), Engine::Gpu(ctx)) => {
                match crate::gpu::Conv2dKernel::new(ctx).map(|k| k.cooperative(ctx)) {
                    Ok(Ok(())) => "f16 storage, f32 sums; convolutions on cooperative matrices (tensor cores), checked against the scalar f16 kernel on this device".into(),
                    Ok(Err(why)) => format!("f16 storage, f32 sums on the scalar kernels ({why})"),
                    Err(e) => format!("unavailable: {e}"),
                }
            }
            (Ok(Dtype::F16), Engine::Cpu(_)) => {
                "unavailable: the CPU backend computes in f32".into()
            }
        }
    }

    /// The feature extractor for `spec` on this device, the network stored as `storage`.
    pub fn extractor(
        &self,
        weights: &ModelWeights,
        spec: FeatureSpec,
        pca: Option<&Pca>,
        aconv: Option<&Conv2dWeights>,
        storage: Dtype,
    ) -> Result<DeviceExtractor<'_>> {
        let e = (weights, spec, pca, aconv, storage);
        Ok(match self {
            Engine::Gpu(ctx) => {
                let ctx: &GpuContext = ctx;
                DeviceExtractor::Gpu(ctx, make(ctx, e)?)
            }
            Engine::Cpu(cpu) => DeviceExtractor::Cpu(cpu, make(cpu, e)?),
        })
    }

    /// This engine with the feature extractor for `spec`, owned together (see
    /// [`Engine::extractor`]).
    pub fn into_extractor(
        self,
        weights: &ModelWeights,
        spec: FeatureSpec,
        pca: Option<&Pca>,
        aconv: Option<&Conv2dWeights>,
        storage: Dtype,
    ) -> Result<OwnedExtractor> {
        let e = (weights, spec, pca, aconv, storage);
        Ok(match self {
            Engine::Gpu(ctx) => {
                let ex = make(&*ctx, e)?;
                OwnedExtractor::Gpu(ctx, ex)
            }
            Engine::Cpu(cpu) => {
                let ex = make(&cpu, e)?;
                OwnedExtractor::Cpu(cpu, ex)
            }
        })
    }
}

/// What an extractor is made from: weights, feature, PCA, AConv layer, network storage.
type ExtractorParts<'a> = (
    &'a ModelWeights,
    FeatureSpec,
    Option<&'a Pca>,
    Option<&'a Conv2dWeights>,
    Dtype,
);

/// The extractor for `spec` on `b`, with the added AConv layer if one is given.
fn make<B: Backend>(b: &B, parts: ExtractorParts<'_>) -> Result<Box<Extractor<B>>> {
    let (weights, spec, pca, aconv, storage) = parts;
    let ex = Extractor::with_storage(b, weights, spec, pca, storage)?;
    Ok(Box::new(match aconv {
        Some(c) => ex.with_aconv(b, c)?,
        None => ex,
    }))
}

/// The storage `precision` gives on every one of `engines`, the same on all so that every
/// device computes the same features: where `auto` would differ between them, f32.
pub fn storage_on_all(engines: &[Engine], precision: Precision) -> Result<Dtype> {
    let each = engines
        .iter()
        .map(|e| e.storage_for(precision))
        .collect::<Result<Vec<_>>>()?;
    Ok(match each.split_first() {
        Some((first, rest)) if rest.iter().all(|d| d == first) => *first,
        _ => Dtype::F32,
    })
}

/// GPUs for `--devices`: every adapter, or adapter indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceList {
    /// Every adapter the backend reaches.
    All,
    /// These indices of `crosspool info --list`, in this order.
    Indices(Vec<usize>),
}

/// Parses `--devices`: `all` or comma-separated adapter indices.
pub fn parse_devices(s: &str) -> std::result::Result<DeviceList, String> {
    if s.trim() == "all" {
        return Ok(DeviceList::All);
    }
    let indices = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| format!("'{s}' is not `all` or adapter indices such as 0,2,3"))?;
    if indices.is_empty() {
        return Err("no device given".into());
    }
    Ok(DeviceList::Indices(indices))
}

/// The engines a command runs on: one for `--device`, or with `--devices` one per GPU named.
pub fn open_engines(
    device: Device,
    devices: Option<&DeviceList>,
    opts: &GpuOptions,
) -> Result<Vec<Engine>> {
    match devices {
        None => Ok(vec![Engine::open(device, opts)?]),
        Some(_) if device == Device::Cpu => Err(Error::Config(
            "--devices names GPUs; it does not go with --device cpu".into(),
        )),
        Some(list) => open_gpus(list, opts),
    }
}

/// Opens the GPUs of `list`, each its own device.
fn open_gpus(list: &DeviceList, opts: &GpuOptions) -> Result<Vec<Engine>> {
    let indices = match list {
        DeviceList::Indices(v) => v.clone(),
        DeviceList::All => {
            let n = GpuContext::list_adapters(opts.backend).len();
            if n == 0 {
                return Err(Error::Config("--devices all: no GPU adapter found".into()));
            }
            (0..n).collect()
        }
    };
    indices
        .iter()
        .map(|&i| {
            let o = GpuOptions {
                adapter: Some(i.to_string()),
                ..opts.clone()
            };
            let ctx = GpuContext::new(&o)
                .map_err(|e| Error::Config(format!("opening GPU {i} of --devices: {e}")))?;
            Ok(Engine::Gpu(Box::new(ctx)))
        })
        .collect()
}

/// The CPU backend in words: threads and convolution kernel.
fn cpu_description(cpu: &CpuBackend) -> String {
    let kernel = cpu
        .conv_kernel()
        .map_or_else(|e| format!("({e})"), |k| k.name());
    format!(
        "CPU backend, {} threads, {kernel} convolutions",
        rayon::current_num_threads(),
    )
}

/// A feature extractor on the GPU or the CPU backend.
pub enum DeviceExtractor<'a> {
    /// On a GPU adapter.
    Gpu(&'a GpuContext, Box<Extractor<GpuContext>>),
    /// On the CPU backend.
    Cpu(&'a CpuBackend, Box<Extractor<CpuBackend>>),
}

impl DeviceExtractor<'_> {
    /// The extractor and its backend, borrowed.
    pub fn view(&self) -> ExtractorRef<'_> {
        match self {
            DeviceExtractor::Gpu(ctx, ex) => ExtractorRef::Gpu(ctx, ex),
            DeviceExtractor::Cpu(cpu, ex) => ExtractorRef::Cpu(cpu, ex),
        }
    }
}

/// A feature extractor and the backend it runs on, borrowed from a [`DeviceExtractor`] or an
/// [`OwnedExtractor`]: what describes the device and computes batches.
#[derive(Clone, Copy)]
pub enum ExtractorRef<'a> {
    /// On a GPU adapter.
    Gpu(&'a GpuContext, &'a Extractor<GpuContext>),
    /// On the CPU backend.
    Cpu(&'a CpuBackend, &'a Extractor<CpuBackend>),
}

impl<'a> ExtractorRef<'a> {
    /// The device in words.
    pub fn describe(self) -> String {
        match self {
            ExtractorRef::Gpu(ctx, _) => ctx.describe(),
            ExtractorRef::Cpu(cpu, _) => cpu_description(cpu),
        }
    }

    /// `(rows, cols)` of one image's feature at `size` x `size`.
    pub fn feature_shape(self, size: usize) -> Result<(usize, usize)> {
        match self {
            ExtractorRef::Gpu(ctx, ex) => ex.feature_shape(ctx, size),
            ExtractorRef::Cpu(cpu, ex) => ex.feature_shape(cpu, size),
        }
    }

    /// Batches in flight by default on this device (see [`Engine::default_in_flight`]).
    pub fn default_in_flight(self) -> usize {
        match self {
            ExtractorRef::Gpu(..) => GPU_IN_FLIGHT,
            ExtractorRef::Cpu(..) => 1,
        }
    }

    /// What computes batches for `cfg` on this device.
    pub fn runner(self, cfg: &ExtractConfig) -> Result<Box<dyn BatchRunner + Send + 'a>> {
        Ok(match self {
            ExtractorRef::Gpu(ctx, ex) => Box::new(GpuRunner::new(ctx, ex, cfg)?),
            ExtractorRef::Cpu(cpu, ex) => Box::new(CpuRunner::new(cpu, ex, cfg)),
        })
    }
}

/// Batches in flight by default on a GPU: one computes while the other's input is written
/// or its features read back.
const GPU_IN_FLIGHT: usize = 2;

impl Engine {
    /// Batches in flight by default: [`GPU_IN_FLIGHT`] on a GPU, one on the CPU backend (a
    /// batch takes every core).
    pub fn default_in_flight(&self) -> usize {
        match self {
            Engine::Gpu(_) => GPU_IN_FLIGHT,
            Engine::Cpu(_) => 1,
        }
    }

    /// The default batch for `spec` at `size` x `size`: as many images as fit a quarter of the
    /// GPU's largest buffer (at most 1 GiB, at most 32); on the CPU backend, 4 (larger
    /// batches are no faster there).
    pub fn default_batch(&self, weights: &ModelWeights, spec: &FeatureSpec, size: u32) -> usize {
        let ctx = match self {
            Engine::Gpu(ctx) => ctx,
            Engine::Cpu(_) => return 4,
        };
        let mut s = Shape4::new(1, size as usize, size as usize, 3);
        let mut largest = s.bytes_f32();
        let last = spec
            .deepest_layer(weights.arch)
            .and_then(|l| weights.arch.layer_index(l))
            .unwrap_or(0);
        for layer in weights.arch.layers().iter().take(last + 1) {
            let next = match &layer.kind {
                crate::model::LayerKind::Conv { spec, .. } => spec.output_shape(s),
                crate::model::LayerKind::MaxPool(p) => p.output_shape(s),
            };
            match next {
                Ok(n) => {
                    s = n;
                    largest = largest.max(s.bytes_f32());
                }
                Err(_) => break,
            }
        }
        let budget = (ctx.limits.max_buffer_size / 4).min(1 << 30);
        ((budget / largest.max(1)) as usize).clamp(1, 32)
    }
}

/// An engine and its feature extractor, owned together: for holders that keep one for long,
/// such as the Python package's `Extractor`.
pub enum OwnedExtractor {
    /// On a GPU adapter.
    Gpu(Box<GpuContext>, Box<Extractor<GpuContext>>),
    /// On the CPU backend.
    Cpu(CpuBackend, Box<Extractor<CpuBackend>>),
}

impl OwnedExtractor {
    /// The extractor and its backend, borrowed.
    pub fn view(&self) -> ExtractorRef<'_> {
        match self {
            OwnedExtractor::Gpu(ctx, ex) => ExtractorRef::Gpu(ctx, ex),
            OwnedExtractor::Cpu(cpu, ex) => ExtractorRef::Cpu(cpu, ex),
        }
    }
}
