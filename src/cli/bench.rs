//! `crosspool bench`: per-stage times, images/s and GFLOP/s of the feature pipeline on this
//! device.

use super::engine::{apply_precision_on_all, Device, Engine};
use anyhow::Context;
use crosspool::features::{FeatureSpec, Representation};
use crosspool::gpu::{Dtype, GpuContext, GpuOptions};
use crosspool::input::{
    collect_images, expand_sources, prepare_source, DecodeMode, DecodeOptions, ImageSource,
};
use crosspool::model::{Arch, ModelWeights, Preprocess};
use crosspool::pipeline::Extractor;
use crosspool::pipeline::{Backend, ExtractWorkspace, Stage};
use crosspool::pooling::Normalization;
use crosspool::shape::Shape4;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Weights file [default: random weights for --model, which time the same].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Architecture (for synthetic weights, or if the file does not name it).
    #[arg(long, value_parser = super::choice::choice::<Arch>(), default_value_t = Arch::Vgg16)]
    model: Arch,
    /// Images are SIZE x SIZE.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// JPEG decoding of the --images (see `extract --decode`).
    #[arg(long, value_parser = super::choice::choice::<DecodeMode>(), default_value_t = DecodeMode::Fast)]
    decode: DecodeMode,
    /// Images per batch.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one)]
    batch: usize,
    /// Timed batches (after warm-up).
    #[arg(long, default_value_t = 10, value_parser = super::at_least_one)]
    iters: usize,
    /// Untimed batches first (shader compilation, allocation).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Real images to time decoding and resizing on (real-image mode); without it the input
    /// is synthetic and decoding is not timed.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Time only decoding, resizing and preprocessing the --images (every file, --iters
    /// times), on all cores and on one, without opening a GPU.
    #[arg(long, requires = "images")]
    decode_only: bool,
    /// Where the network runs (see `extract --device`; here the default is the GPU adapter,
    /// software ones included).
    #[arg(long, value_parser = super::choice::choice::<Device>(), default_value_t = Device::Gpu)]
    device: Device,
    #[command(flatten)]
    run: super::RunArgs,
    /// Print the results as JSON on standard output.
    #[arg(long)]
    json: bool,
}

/// What one benchmark run measured, on either device.
struct Measured {
    /// Median seconds of a whole batch, of its compute alone, of writing the input and of
    /// reading the features back.
    total: f64,
    compute: f64,
    upload: f64,
    download: f64,
    /// Each stage alone.
    stages: Vec<Stage>,
    peak_tflops: Option<f64>,
    /// How the network stored weights and activations.
    storage: Dtype,
    /// What --precision runs on the device, in words (`crosspool info`'s line).
    precision_path: String,
}

/// Datasheet FP32 (non-tensor) peaks, for the share of peak; matched on the adapter's name.
const FP32_PEAK_TFLOPS: &[(&str, f64)] = &[
    ("H100", 67.0),
    ("H200", 67.0),
    ("A100", 19.5),
    ("L40S", 91.6),
    ("RTX 4090", 82.6),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `bench`.
pub fn run(opts: &GpuOptions, a: Args) -> anyhow::Result<()> {
    let (t, t1) = a.model.default_pair();
    if a.decode_only {
        return decode_only(&a);
    }
    let weights = match &a.weights {
        Some(p) => ModelWeights::load(p, Some(a.model), Some(t1))?,
        None => ModelWeights::synthetic(a.model, Some(t1))?,
    };
    let spec = FeatureSpec {
        repr: Representation::paper_default(a.model),
        norm: Normalization::PAPER,
    };
    let shape = Shape4::new(a.batch, a.size as usize, a.size as usize, 3);
    let (x, decode_ips) = bench_input(&a, shape, &weights.preprocess)?;
    let mut engines = super::engine::open_engines(a.device, a.run.devices.as_ref(), opts)?;
    let storage = apply_precision_on_all(&mut engines, a.run.precision)?;
    let engine = &engines[0];
    let mut m = match engine {
        Engine::Gpu(ctx) => {
            let peak = FP32_PEAK_TFLOPS
                .iter()
                .find(|(n, _)| ctx.info.name.contains(n))
                .map(|(_, p)| *p);
            measure::<GpuContext>(ctx, &a, (&weights, storage), spec.clone(), &x, shape, peak)?
        }
        Engine::Cpu(cpu) => measure(cpu, &a, (&weights, storage), spec.clone(), &x, shape, None)?,
    };
    m.precision_path = engine.precision_path(a.run.precision);
    let in_flight = a
        .run
        .in_flight
        .unwrap_or_else(|| engine.default_in_flight());
    let streams: Vec<(usize, &Engine)> = engines
        .iter()
        .enumerate()
        .flat_map(|(k, e)| std::iter::repeat_n((k, e), in_flight))
        .collect();
    let together = if streams.len() > 1 {
        Some(measure_together(
            &streams,
            &a,
            (&weights, storage),
            &spec,
            &x,
            shape,
        )?)
    } else {
        None
    };
    report(
        &a,
        &engine.describe(),
        &m,
        together.as_ref(),
        decode_ips,
        (t, t1),
        opts.unchecked_shaders,
    );
    Ok(())
}

/// Streams of batches timed together: per stream its device's index and name and its
/// seconds for --iters batches.
struct Together {
    streams: Vec<(usize, String, f64)>,
    /// Streams per device.
    in_flight: usize,
    /// From the common start until the last stream finished.
    wall: f64,
}

/// Every stream (a device, as often as it has batches in flight) runs --warmup, then (all
/// starting together) --iters whole batches of `x`: write, extract, read back, each on its
/// own thread with its own buffers, as `extract --devices --in-flight` runs them.
fn measure_together(
    streams: &[(usize, &Engine)],
    a: &Args,
    (weights, storage): (&ModelWeights, Dtype),
    spec: &FeatureSpec,
    x: &[f32],
    shape: Shape4,
) -> anyhow::Result<Together> {
    fn run<B: Backend>(
        backend: &B,
        a: &Args,
        (weights, storage): (&ModelWeights, Dtype),
        spec: &FeatureSpec,
        x: &[f32],
        shape: Shape4,
        start: &std::sync::Barrier,
    ) -> anyhow::Result<(Instant, Instant)> {
        let ex = Extractor::with_storage(backend, weights, spec.clone(), None, storage)?;
        let ws = ex.workspace(backend, shape)?;
        let input = backend.tensor(shape, "input")?;
        for _ in 0..a.warmup.max(1) {
            backend.write(&input, x)?;
            backend.download(ex.extract(backend, &input, &ws)?)?;
        }
        start.wait();
        let t0 = Instant::now();
        for _ in 0..a.iters {
            backend.write(&input, x)?;
            backend.download(ex.extract(backend, &input, &ws)?)?;
        }
        Ok((t0, Instant::now()))
    }
    let start = std::sync::Barrier::new(streams.len());
    let times: Vec<anyhow::Result<(Instant, Instant)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .map(|&(_, e)| {
                let start = &start;
                scope.spawn(move || {
                    let r = match e {
                        Engine::Gpu(ctx) => {
                            run::<GpuContext>(ctx, a, (weights, storage), spec, x, shape, start)
                        }
                        Engine::Cpu(cpu) => run(cpu, a, (weights, storage), spec, x, shape, start),
                    };
                    // A device that failed before the start must not hold the others back.
                    if r.is_err() {
                        start.wait();
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a device thread panicked")))
            })
            .collect()
    });
    let mut timed = Vec::new();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for (&(k, e), t) in streams.iter().zip(times) {
        let (t0, t1) = t.with_context(|| format!("timing GPU {k} of --devices"))?;
        first = Some(first.map_or(t0, |f| f.min(t0)));
        last = Some(last.map_or(t1, |l| l.max(t1)));
        timed.push((k, e.describe(), (t1 - t0).as_secs_f64()));
    }
    let wall = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => anyhow::bail!("no device to time"),
    };
    let devices = streams.iter().map(|s| s.0).max().map_or(1, |k| k + 1);
    Ok(Together {
        streams: timed,
        in_flight: streams.len() / devices,
        wall,
    })
}

/// Times whole batches on `backend` as the extract command runs them: input written, one
/// submission, features read back.
fn measure<B: Backend>(
    backend: &B,
    a: &Args,
    (weights, storage): (&ModelWeights, Dtype),
    spec: FeatureSpec,
    x: &[f32],
    shape: Shape4,
    peak_tflops: Option<f64>,
) -> anyhow::Result<Measured> {
    let ex = Extractor::with_storage(backend, weights, spec, None, storage)?;
    let ws = ex.workspace(backend, shape)?;
    let input = backend.tensor(shape, "input")?;
    backend.write(&input, x)?;
    for _ in 0..a.warmup {
        backend.download(ex.extract(backend, &input, &ws)?)?;
    }
    let timed = time_batches(backend, &ex, &input, &ws, x, a.iters)?;
    Ok(Measured {
        total: median(timed.total),
        compute: median(timed.compute),
        upload: median(timed.upload),
        download: median(timed.download),
        stages: ex.profile(backend, &input, &ws)?,
        peak_tflops,
        storage,
        precision_path: String::new(),
    })
}

/// Prints what `m` measured: JSON with `--json`, else lines.
fn report(
    a: &Args,
    device: &str,
    m: &Measured,
    together: Option<&Together>,
    decode_ips: Option<f64>,
    (t, t1): (&str, &str),
    unchecked_shaders: bool,
) {
    let storage = m.storage;
    let (t_total, t_compute, t_up, t_down) = (m.total, m.compute, m.upload, m.download);
    let stages = &m.stages;
    let flops: f64 = stages.iter().map(|s| s.flops).sum();
    let gflops = flops / t_compute / 1e9;
    let peak = m.peak_tflops;
    let report = serde_json::json!({
        "device": device,
        "precision": storage,
        "precision_path": m.precision_path,
        "model": a.model.name(),
        "layers": [t, t1],
        "size": a.size,
        "batch": a.batch,
        "iters": a.iters,
        "unchecked_shaders": unchecked_shaders,
        "images_per_second": a.batch as f64 / t_total,
        "gpu_images_per_second": a.batch as f64 / t_compute,
        "decode_images_per_second": decode_ips,
        "gflop_per_image": flops / a.batch as f64 / 1e9,
        "gflops": gflops,
        "fp32_peak_share": peak.map(|p| gflops / (p * 1e3)),
        "ms": {
            "upload": t_up * 1e3,
            "compute": t_compute * 1e3,
            "download": t_down * 1e3,
            "batch": t_total * 1e3,
        },
        "stages_ms": stages.iter().map(|s| serde_json::json!({
            "stage": s.name,
            "ms": s.seconds * 1e3,
            "gflops": if s.seconds > 0.0 { s.flops / s.seconds / 1e9 } else { 0.0 },
            "tile": s.variant,
        })).collect::<Vec<_>>(),
    });
    let one_alone = a.batch as f64 / t_total;
    let together = together.map(|g| {
        let images = (a.batch * a.iters) as f64;
        let combined = images * g.streams.len() as f64 / g.wall;
        // A device's rate: its streams' images over the longest of its streams.
        let devices = g.streams.len() / g.in_flight.max(1);
        let per_device: Vec<serde_json::Value> = (0..devices)
            .map(|k| {
                let mine: Vec<_> = g.streams.iter().filter(|s| s.0 == k).collect();
                let secs = mine.iter().map(|s| s.2).fold(0.0, f64::max);
                serde_json::json!({
                    "device": mine.first().map(|s| s.1.clone()),
                    "images_per_second": images * mine.len() as f64 / secs,
                })
            })
            .collect();
        serde_json::json!({
            "in_flight": g.in_flight,
            "devices": per_device,
            "images_per_second": combined,
            "scaling_over_one": combined / one_alone,
        })
    });
    let mut report = report;
    if let Some(g) = &together {
        report["overlapped"] = g.clone();
    }
    if a.json {
        println!("{report}");
        return;
    }
    println!("device:   {device}");
    println!(
        "pipeline: {} {t} x {t1}, {}x{}, batch {}, {} timed batches (median), {} storage",
        a.model,
        a.size,
        a.size,
        a.batch,
        a.iters,
        storage.wgsl()
    );
    println!("kernels:  {}", m.precision_path);
    println!(
        "images/s: {:.1} end to end (upload + compute + download), {:.1} compute only",
        a.batch as f64 / t_total,
        a.batch as f64 / t_compute
    );
    if let Some(d) = decode_ips {
        println!("decode:   {d:.1} images/s (decode + resize + preprocess on {} threads; overlaps the GPU in extract)", rayon::current_num_threads());
    }
    print!(
        "compute:  {:.1} GFLOP/image, {gflops:.0} GFLOP/s",
        flops / a.batch as f64 / 1e9
    );
    match peak {
        Some(p) => println!(
            " ({:.1}% of the {p} TFLOP/s fp32 datasheet peak)",
            100.0 * gflops / (p * 1e3)
        ),
        None => println!(),
    }
    println!(
        "batch:    upload {:.2} ms, compute {:.2} ms, download {:.2} ms",
        t_up * 1e3,
        t_compute * 1e3,
        t_down * 1e3
    );
    println!("stages (each submitted and waited for alone):");
    for s in stages {
        println!(
            "  {:<10} {:>9.3} ms {:>9.1} GFLOP/s{}",
            s.name,
            s.seconds * 1e3,
            if s.seconds > 0.0 {
                s.flops / s.seconds / 1e9
            } else {
                0.0
            },
            s.variant
                .as_ref()
                .map(|v| format!("  ({v} tile)"))
                .unwrap_or_default()
        );
    }
    if let Some(g) = together {
        let devices = g["devices"].as_array().map_or(0, Vec::len);
        println!(
            "overlapped: {:.1} images/s end to end, {} batches in flight on each of {devices} device(s), {:.2}x one batch at a time on the first",
            g["images_per_second"].as_f64().unwrap_or(0.0),
            g["in_flight"],
            g["scaling_over_one"].as_f64().unwrap_or(0.0)
        );
        for (k, d) in g["devices"].as_array().into_iter().flatten().enumerate() {
            println!(
                "  GPU {k}: {:.1} images/s ({})",
                d["images_per_second"].as_f64().unwrap_or(0.0),
                d["device"].as_str().unwrap_or("")
            );
        }
    }
}

/// The batch to time: real images decoded on all cores (with the decode rate), or synthetic
/// values.
fn bench_input(
    a: &Args,
    shape: Shape4,
    pre: &Preprocess,
) -> anyhow::Result<(Vec<f32>, Option<f64>)> {
    let Some(dir) = &a.images else {
        let x = (0..shape.len())
            .map(|i| ((i * 7919 % 255) as f32 / 255.0 - 0.45) / 0.225)
            .collect();
        return Ok((x, None));
    };
    let paths = images_in(dir)?;
    let batch: Vec<ImageSource> = paths.iter().cycle().take(a.batch).cloned().collect();
    let mut times = Vec::new();
    let mut out = Vec::new();
    for _ in 0..a.iters.min(5) {
        let (decoded, secs) = prepare_all(&batch, a.size, pre, a.decode)?;
        times.push(secs);
        out = decoded.concat();
    }
    Ok((out, Some(a.batch as f64 / median(times))))
}

/// The images under `dir` (tar shards' members included), at least one.
fn images_in(dir: &Path) -> anyhow::Result<Vec<ImageSource>> {
    let paths = expand_sources(collect_images(std::slice::from_ref(&dir.to_path_buf()))?);
    anyhow::ensure!(!paths.is_empty(), "no images in {}", dir.display());
    Ok(paths)
}

/// Every image of `paths` through the input path on the current thread pool, and the
/// seconds it took.
fn prepare_all(
    paths: &[ImageSource],
    size: u32,
    pre: &Preprocess,
    mode: DecodeMode,
) -> anyhow::Result<(Vec<Vec<f32>>, f64)> {
    let opts = DecodeOptions {
        mode,
        ..DecodeOptions::default()
    };
    let t0 = Instant::now();
    let out = paths
        .par_iter()
        .map(|p| prepare_source(p, size, pre, opts))
        .collect::<crosspool::Result<_>>()?;
    Ok((out, t0.elapsed().as_secs_f64()))
}

/// Seconds per stage of each timed batch.
struct Timings {
    upload: Vec<f64>,
    compute: Vec<f64>,
    download: Vec<f64>,
    total: Vec<f64>,
}

/// Times `iters` whole batches as the extract command runs them: upload, one submission,
/// download.
fn time_batches<B: Backend>(
    backend: &B,
    ex: &Extractor<B>,
    input: &B::Tensor,
    ws: &ExtractWorkspace<B>,
    x: &[f32],
    iters: usize,
) -> anyhow::Result<Timings> {
    let mut t = Timings {
        upload: Vec::new(),
        compute: Vec::new(),
        download: Vec::new(),
        total: Vec::new(),
    };
    for _ in 0..iters {
        let t0 = Instant::now();
        backend.write(input, x)?;
        backend.wait("upload")?;
        let t1 = Instant::now();
        ex.extract(backend, input, ws)?;
        backend.wait("extract")?;
        let t2 = Instant::now();
        backend.download(ws.features())?;
        let t3 = Instant::now();
        t.upload.push((t1 - t0).as_secs_f64());
        t.compute.push((t2 - t1).as_secs_f64());
        t.download.push((t3 - t2).as_secs_f64());
        t.total.push((t3 - t0).as_secs_f64());
    }
    Ok(t)
}

/// `--decode-only`: images/s of `input::prepare` (decode, resize to --size, preprocess) over
/// every image of --images, median of --iters passes, on all cores and on one.
fn decode_only(a: &Args) -> anyhow::Result<()> {
    let dir = a.images.as_ref().context("--decode-only needs --images")?;
    let paths = images_in(dir)?;
    // Every preprocessing costs the same (a scale and shift per value); no model is needed.
    let pre = Preprocess::TORCHVISION;
    let pass = |paths: &[ImageSource]| -> anyhow::Result<f64> {
        let (done, secs) = prepare_all(paths, a.size, &pre, a.decode)?;
        Ok(done.len() as f64 / secs)
    };
    let threads = rayon::current_num_threads();
    pass(&paths)?; // warm the file cache
    let all: Vec<f64> = (0..a.iters)
        .map(|_| pass(&paths))
        .collect::<anyhow::Result<_>>()?;
    let one_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .context("starting a one-thread pool")?;
    let one: Vec<f64> = (0..a.iters)
        .map(|_| one_pool.install(|| pass(&paths)))
        .collect::<anyhow::Result<_>>()?;
    // Per pass: images/s, so the median of rates is the rate of the median pass.
    let (all, one) = (median(all), median(one));
    let report = serde_json::json!({
        "images": paths.len(),
        "dir": dir.display().to_string(),
        "size": a.size,
        "decode": crosspool::choice::value_name(&a.decode),
        "iters": a.iters,
        "threads": threads,
        "decode_images_per_second": all,
        "decode_images_per_second_one_core": one,
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "decode:   {} images from {} to {}x{} ({} decoding): {all:.1} images/s on {threads} threads, {one:.1} on one (median of {} passes)",
            paths.len(),
            dir.display(),
            a.size,
            a.size,
            crosspool::choice::value_name(&a.decode),
            a.iters
        );
    }
    Ok(())
}
