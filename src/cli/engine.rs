//! `--device`: the devices of [`crosspool::engine`], and `crosspool info`.

use crosspool::cpu::ConvKernel;
pub use crosspool::engine::{
    apply_precision_on_all, open_engines, parse_devices, Device, DeviceList, Engine, Precision,
};
use crosspool::gpu::{GpuContext, GpuOptions};

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
    let cpu = Engine::Cpu(crosspool::cpu::CpuBackend::with_conv_kernel(kernel));
    println!("precision (--precision, on the CPU backend):");
    for p in [Precision::F32, Precision::Bf16, Precision::Auto] {
        let name = format!("{p:?}").to_lowercase();
        println!("  {name:<5} {}", cpu.precision_path(p));
    }
    println!();
    println!("GPU");
    let auto = match GpuContext::new(opts) {
        Ok(ctx) => {
            print!("{}", ctx.report());
            let software = ctx.info.device_type == wgpu::DeviceType::Cpu;
            let gpu = Engine::Gpu(Box::new(ctx));
            println!("precision (--precision, on this GPU):");
            for p in [Precision::F32, Precision::F16, Precision::Auto] {
                let name = format!("{p:?}").to_lowercase();
                println!("  {name:<5} {}", gpu.precision_path(p));
            }
            if software {
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
