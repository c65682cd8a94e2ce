//! Where work runs: a GPU adapter or the native CPU backend (`--device`, `--devices`), and
//! the feature extractor on it. The command line and the Python package open devices here.

use crate::cpu::{ConvKernel, CpuBackend, Products};
use crate::error::{Error, Result};
use crate::extract::{BackendRunner, BatchRunner, ExtractConfig};
use crate::features::FeatureSpec;
use crate::gpu::{Dtype, GpuContext, GpuOptions};
use crate::model::ModelWeights;
use crate::pca::Pca;
use crate::pipeline::{Backend, Extractor};
use crate::shape::Shape4;
use crate::weights::Conv2dWeights;
use std::borrow::Borrow;

crate::choice! {
    /// Where a command computes.
    pub enum Device {
        /// A real GPU if there is one; the CPU backend when the only adapter is a software one
        /// (lavapipe, llvmpipe, WARP) or none opens.
        Auto = "auto",
        /// The GPU adapter that --backend / --adapter pick, software ones included.
        Gpu = "gpu",
        /// The native CPU backend, on all cores.
        Cpu = "cpu",
    }
}

crate::choice! {
    /// How a GPU stores weights and activations between layers, and what the CPU backend
    /// multiplies (`--precision`). Sums are f32 in every case.
    pub enum Precision: default F32 {
        /// f32 throughout: the features the tests hold to the reference within f32 rounding.
        F32 = "f32",
        /// f16 weights and intermediate activations (the layers the features read stay f32);
        /// needs a GPU with shader-f16. An image whose activations overflow f16 fails.
        F16 = "f16",
        /// f16 on a hardware GPU with shader-f16, bf16 on a CPU with AMX, f32 elsewhere
        /// (software adapters, and the CPU backend without AMX, where f16 storage gains
        /// nothing).
        Auto = "auto",
        /// bf16 products: the CPU backend's convolutions multiply weights and inputs rounded
        /// to bf16, on AMX tiles (Intel Xeon Sapphire Rapids or later, on Linux; refused
        /// elsewhere); activations stay f32.
        Bf16 = "bf16",
    }
}

impl Precision {
    /// What the CPU backend's convolutions multiply in this precision: bf16 when asked for,
    /// and for `auto` where the CPU runs it.
    pub fn cpu_products(self) -> Products {
        match self {
            Precision::Bf16 => Products::Bf16,
            Precision::Auto if Products::Bf16.is_available() => Products::Bf16,
            _ => Products::F32,
        }
    }

    /// The precision a run recorded as its storage and products (settings files).
    pub fn recorded(storage: Dtype, products: Products) -> Self {
        match (storage, products) {
            (Dtype::F16, _) => Precision::F16,
            (Dtype::F32, Products::Bf16) => Precision::Bf16,
            (Dtype::F32, Products::F32) => Precision::F32,
        }
    }
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
            Engine::Gpu(ctx) => Compute::describe(&**ctx),
            Engine::Cpu(cpu) => cpu.describe(),
        }
    }

    /// Sets this device to compute in `precision` (the CPU backend's products), and returns
    /// the storage it gives.
    pub fn apply_precision(&mut self, precision: Precision) -> Result<Dtype> {
        let storage = self.storage_for(precision)?;
        if let Engine::Cpu(cpu) = self {
            *cpu = cpu.with_products(precision.cpu_products());
        }
        Ok(storage)
    }

    /// What the convolutions multiply: bf16 only where the CPU backend was set to.
    pub fn products(&self) -> Products {
        match self {
            Engine::Gpu(_) => Products::F32,
            Engine::Cpu(cpu) => cpu.products(),
        }
    }

    /// The storage `precision` gives on this device (an error where it cannot run).
    pub fn storage_for(&self, precision: Precision) -> Result<Dtype> {
        match (self, precision) {
            (_, Precision::F32) => Ok(Dtype::F32),
            (Engine::Gpu(_), Precision::Bf16) => Err(Error::Config(
                "--precision bf16 runs on the CPU backend (AMX); on a GPU use --precision f16 or f32".into(),
            )),
            (Engine::Cpu(_), Precision::Bf16) => Products::Bf16.require().map(|()| Dtype::F32),
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
            (Ok(_), Engine::Cpu(_)) if precision.cpu_products() == Products::Bf16 => {
                "bf16 products on AMX tiles, f32 sums and storage (layers with stride 1, or 1x1 without padding, and input channels a multiple of 32; f32 in the others)".into()
            }
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
    ) -> Result<Box<dyn FeatureDevice + '_>> {
        let e = (weights, spec, pca, aconv, storage);
        Ok(match self {
            Engine::Gpu(ctx) => on::<GpuContext, _>(&**ctx, e)?,
            Engine::Cpu(cpu) => on::<CpuBackend, _>(cpu, e)?,
        })
    }

    /// This engine with the feature extractor for `spec`, owned together (see
    /// [`Engine::extractor`]): for holders that keep one for long, such as the Python
    /// package's `Extractor`.
    pub fn into_extractor(
        self,
        weights: &ModelWeights,
        spec: FeatureSpec,
        pca: Option<&Pca>,
        aconv: Option<&Conv2dWeights>,
        storage: Dtype,
    ) -> Result<Box<dyn FeatureDevice>> {
        let e = (weights, spec, pca, aconv, storage);
        Ok(match self {
            Engine::Gpu(ctx) => on::<GpuContext, _>(ctx, e)?,
            Engine::Cpu(cpu) => on::<CpuBackend, _>(cpu, e)?,
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

/// The extractor for `spec` on `device` (a backend, owned or borrowed), with the added AConv
/// layer if one is given.
fn on<'d, B, H>(device: H, parts: ExtractorParts<'_>) -> Result<Box<dyn FeatureDevice + 'd>>
where
    B: Compute,
    H: Borrow<B> + Send + Sync + 'd,
    Extractor<B>: Send + Sync,
    for<'x> BackendRunner<'x, B>: Send,
{
    let (weights, spec, pca, aconv, storage) = parts;
    let b = device.borrow();
    let ex = Extractor::with_storage(b, weights, spec, pca, storage)?;
    let extractor = match aconv {
        Some(c) => ex.with_aconv(b, c)?,
        None => ex,
    };
    Ok(Box::new(OnDevice {
        device,
        extractor,
        backend: std::marker::PhantomData,
    }))
}

/// Sets every one of `engines` to `precision` ([`Engine::apply_precision`]) and returns
/// the storage it gives, the same on all so that every device computes the same features:
/// where `auto` would differ between them, f32.
pub fn apply_precision_on_all(engines: &mut [Engine], precision: Precision) -> Result<Dtype> {
    let each = engines
        .iter_mut()
        .map(|e| e.apply_precision(precision))
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

/// What the engine asks of a backend beyond its operations.
pub trait Compute: Backend + Sync + Sized + 'static {
    /// Batches in flight by default.
    const IN_FLIGHT: usize;
    /// The device in words, for logs and JSON summaries.
    fn describe(&self) -> String;
}

impl Compute for GpuContext {
    const IN_FLIGHT: usize = GPU_IN_FLIGHT;

    fn describe(&self) -> String {
        GpuContext::describe(self)
    }
}

impl Compute for CpuBackend {
    /// A batch takes every core.
    const IN_FLIGHT: usize = 1;

    /// Threads and convolution kernel.
    fn describe(&self) -> String {
        let kernel = self
            .conv_kernel()
            .map_or_else(|e| format!("({e})"), |k| k.name());
        format!(
            "CPU backend, {} threads, {kernel} convolutions",
            rayon::current_num_threads(),
        )
    }
}

/// A feature extractor and the device it computes on, whichever that is: what describes the
/// device and computes batches.
pub trait FeatureDevice: Send + Sync {
    /// The device in words.
    fn describe(&self) -> String;
    /// `(rows, cols)` of one image's feature at `size` x `size`.
    fn feature_shape(&self, size: usize) -> Result<(usize, usize)>;
    /// Batches in flight by default on this device.
    fn default_in_flight(&self) -> usize;
    /// What computes batches for `cfg` on this device.
    fn runner(&self, cfg: &ExtractConfig) -> Result<Box<dyn BatchRunner + Send + '_>>;
}

/// An extractor on backend `B`, held as `H` (the backend itself, boxed, or borrowed).
struct OnDevice<B: Backend, H> {
    device: H,
    extractor: Extractor<B>,
    backend: std::marker::PhantomData<fn() -> B>,
}

impl<B, H> FeatureDevice for OnDevice<B, H>
where
    B: Compute,
    H: Borrow<B> + Send + Sync,
    Extractor<B>: Send + Sync,
    for<'x> BackendRunner<'x, B>: Send,
{
    fn describe(&self) -> String {
        self.device.borrow().describe()
    }

    fn feature_shape(&self, size: usize) -> Result<(usize, usize)> {
        self.extractor.feature_shape(self.device.borrow(), size)
    }

    fn default_in_flight(&self) -> usize {
        B::IN_FLIGHT
    }

    fn runner(&self, cfg: &ExtractConfig) -> Result<Box<dyn BatchRunner + Send + '_>> {
        Ok(Box::new(BackendRunner::new(
            self.device.borrow(),
            &self.extractor,
            cfg,
        )))
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
            Engine::Gpu(_) => GpuContext::IN_FLIGHT,
            Engine::Cpu(_) => CpuBackend::IN_FLIGHT,
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
        let largest = largest_activation(weights, spec, size);
        let budget = (ctx.limits.max_buffer_size / 4).min(1 << 30);
        ((budget / largest.max(1)) as usize).clamp(1, 32)
    }

    /// What bounds one batch's memory on this device (see [`check_fits`]).
    pub fn memory_limit(&self) -> MemoryLimit {
        match self {
            Engine::Gpu(ctx) => MemoryLimit::GpuBuffer(ctx.limits.max_buffer_size),
            Engine::Cpu(_) => MemoryLimit::HostMemory(available_memory()),
        }
    }
}

/// What bounds one batch's memory on a device.
#[derive(Clone, Copy, Debug)]
pub enum MemoryLimit {
    /// A GPU's largest buffer, in bytes.
    GpuBuffer(u64),
    /// The memory available to the CPU backend, where the system says.
    HostMemory(Option<u64>),
}

/// Refuses, before anything is allocated, a run whose batches of `batch` images at
/// `size` x `size` with features of `(rows, cols)` (`None` while the shape is not yet known)
/// need more than `limit`: one buffer over
/// the GPU's largest, or more than the memory available to the CPU backend (where an
/// allocation that fails aborts the process).
pub fn check_fits(
    limit: MemoryLimit,
    weights: &ModelWeights,
    spec: &FeatureSpec,
    size: u32,
    feature_shape: Option<(usize, usize)>,
    batch: usize,
) -> Result<()> {
    let (rows, cols) = feature_shape.unwrap_or((0, 0));
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let (activation, feature) = (
        largest_activation(weights, spec, size),
        (rows * cols) as u64 * 4,
    );
    let b = batch as u64;
    let (needed, limit, what) = match limit {
        MemoryLimit::GpuBuffer(max) => (
            b.saturating_mul(activation.max(feature)),
            max,
            "the GPU's largest buffer",
        ),
        // The activations the network holds at once (two for a plain chain), the input and
        // the features.
        MemoryLimit::HostMemory(Some(free)) => (
            b.saturating_mul((weights.arch.live_activations() as u64 + 1) * activation + feature),
            free,
            "the memory available",
        ),
        MemoryLimit::HostMemory(None) => return Ok(()),
    };
    if needed <= limit {
        return Ok(());
    }
    let feature = match feature_shape {
        Some(_) => format!(", the feature {rows} x {cols}, {:.2} GiB", gib(feature)),
        None => String::new(),
    };
    Err(Error::TooLarge(format!(
        "images of {size}x{size} in batches of {batch} need about {:.1} GiB (per image: the largest activation {:.2} GiB{feature}), more than {what} ({:.1} GiB): use a smaller --size, --window or --batch",
        gib(needed),
        gib(activation),
        gib(limit)
    )))
}

/// Bytes of the largest f32 activation of one image at `size` x `size` up to the deepest
/// layer `spec` reads.
fn largest_activation(weights: &ModelWeights, spec: &FeatureSpec, size: u32) -> u64 {
    let input = Shape4::new(1, size as usize, size as usize, 3);
    let last = spec
        .deepest_layer(weights.arch)
        .and_then(|l| weights.arch.layer_index(l))
        .unwrap_or(0);
    // Sizes that do not reach `last` are refused elsewhere, with the smallest size.
    let shapes = weights.arch.output_shapes(input, last).unwrap_or_default();
    shapes
        .iter()
        .map(|s| s.bytes_f32())
        .fold(input.bytes_f32(), u64::max)
}

/// The memory the system can give without swapping (Linux's MemAvailable), if it says.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
