//! `--device`: where a command computes, and the feature extractor on it.

use anyhow::Context;
use crosspool::cpu::{ConvKernel, CpuBackend};
use crosspool::extract::{BatchRunner, CpuRunner, ExtractConfig, GpuRunner};
use crosspool::features::FeatureSpec;
use crosspool::gpu::{GpuContext, GpuOptions};
use crosspool::model::ModelWeights;
use crosspool::pca::Pca;
use crosspool::pipeline::{Backend, Extractor};
use crosspool::weights::Conv2dWeights;

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
    /// A GPU adapter (boxed: a context is large, the CPU variant small).
    Gpu(Box<GpuContext>),
    /// The native CPU backend, its convolution kernel resolved from `CROSSPOOL_CPU_CONV`.
    Cpu(CpuBackend),
}

impl Engine {
    /// Opens `device`.
    pub fn open(device: Device, opts: &GpuOptions) -> anyhow::Result<Self> {
        // A bad CROSSPOOL_CPU_CONV fails here, before any work, whichever device runs.
        let cpu = Engine::Cpu(CpuBackend::with_conv_kernel(ConvKernel::from_env()?));
        match device {
            Device::Cpu => Ok(cpu),
            Device::Gpu => Ok(Engine::Gpu(Box::new(
                GpuContext::new(opts).context("opening the GPU")?,
            ))),
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

    /// The feature extractor for `spec` on this device.
    pub fn extractor(
        &self,
        weights: &ModelWeights,
        spec: FeatureSpec,
        pca: Option<&Pca>,
        aconv: Option<&Conv2dWeights>,
    ) -> anyhow::Result<DeviceExtractor<'_>> {
        fn make<B: Backend>(
            b: &B,
            weights: &ModelWeights,
            spec: FeatureSpec,
            pca: Option<&Pca>,
            aconv: Option<&Conv2dWeights>,
        ) -> crosspool::error::Result<Box<Extractor<B>>> {
            let ex = Extractor::new(b, weights, spec, pca)?;
            Ok(Box::new(match aconv {
                Some(c) => ex.with_aconv(b, c)?,
                None => ex,
            }))
        }
        Ok(match self {
            Engine::Gpu(ctx) => {
                let ctx: &GpuContext = ctx;
                DeviceExtractor::Gpu(ctx, make(ctx, weights, spec, pca, aconv)?)
            }
            Engine::Cpu(cpu) => DeviceExtractor::Cpu(cpu, make(cpu, weights, spec, pca, aconv)?),
        })
    }
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
pub fn parse_devices(s: &str) -> Result<DeviceList, String> {
    if s.trim() == "all" {
        return Ok(DeviceList::All);
    }
    let indices = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
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
) -> anyhow::Result<Vec<Engine>> {
    match devices {
        None => Ok(vec![Engine::open(device, opts)?]),
        Some(list) => {
            anyhow::ensure!(
                device != Device::Cpu,
                "--devices names GPUs; it does not go with --device cpu"
            );
            open_gpus(list, opts)
        }
    }
}

/// Opens the GPUs of `list`, each its own device.
fn open_gpus(list: &DeviceList, opts: &GpuOptions) -> anyhow::Result<Vec<Engine>> {
    let indices = match list {
        DeviceList::Indices(v) => v.clone(),
        DeviceList::All => {
            let n = GpuContext::list_adapters(opts.backend).len();
            anyhow::ensure!(n > 0, "--devices all: no GPU adapter found");
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
            let ctx =
                GpuContext::new(&o).with_context(|| format!("opening GPU {i} of --devices"))?;
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

/// `crosspool info`: the CPU backend, the GPU adapter (or why none opens), and what
/// `--device auto` picks. With `require_gpu`, an error if no adapter opens; with `list`,
/// every adapter with its index instead.
pub fn info(opts: &GpuOptions, require_gpu: bool, list: bool) -> anyhow::Result<()> {
    if list {
        let adapters = GpuContext::list_adapters(opts.backend);
        anyhow::ensure!(
            !adapters.is_empty() || !require_gpu,
            "no GPU adapter found (backend {:?})",
            opts.backend
        );
        if adapters.is_empty() {
            println!("no GPU adapter found");
        }
        for a in adapters {
            let i = &a.info;
            println!(
                "{:>3}  {}  ({:?}, {:?}, driver {} {})",
                a.index, i.name, i.backend, i.device_type, i.driver, i.driver_info
            );
        }
        return Ok(());
    }
    println!("CPU backend");
    if let Some(model) = cpu_model() {
        println!("cpu:        {model}");
    }
    println!("threads:    {}", rayon::current_num_threads());
    let kernel = ConvKernel::from_env()?;
    println!(
        "conv:       {} (CROSSPOOL_CPU_CONV; this CPU runs {})",
        kernel.name(),
        ConvKernel::available()
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("GPU");
    let auto = match GpuContext::new(opts) {
        Ok(ctx) => {
            print!("{}", ctx.report());
            if ctx.info.device_type == wgpu::DeviceType::Cpu {
                "cpu (the only adapter is a software one)"
            } else {
                "gpu"
            }
        }
        Err(e) => {
            println!("none opens: {e:#}");
            if require_gpu {
                return Err(anyhow::Error::new(e).context("opening the GPU"));
            }
            "cpu (no GPU adapter opens)"
        }
    };
    println!();
    println!("--device auto runs on: {auto}");
    Ok(())
}

/// The CPU's model name, where the OS says it (Linux).
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// A feature extractor on the GPU or the CPU backend.
pub enum DeviceExtractor<'a> {
    /// On a GPU adapter.
    Gpu(&'a GpuContext, Box<Extractor<GpuContext>>),
    /// On the CPU backend.
    Cpu(&'a CpuBackend, Box<Extractor<CpuBackend>>),
}

impl DeviceExtractor<'_> {
    /// `(rows, cols)` of one image's feature at `size` x `size`.
    pub fn feature_shape(&self, size: usize) -> anyhow::Result<(usize, usize)> {
        Ok(match self {
            DeviceExtractor::Gpu(ctx, ex) => ex.feature_shape(*ctx, size)?,
            DeviceExtractor::Cpu(cpu, ex) => ex.feature_shape(*cpu, size)?,
        })
    }

    /// What computes batches for `cfg` on this device.
    pub fn runner(&self, cfg: &ExtractConfig) -> anyhow::Result<Box<dyn BatchRunner + Send + '_>> {
        Ok(match self {
            DeviceExtractor::Gpu(ctx, ex) => Box::new(GpuRunner::new(ctx, ex, cfg)?),
            DeviceExtractor::Cpu(cpu, ex) => Box::new(CpuRunner::new(cpu, ex, cfg)),
        })
    }
}
