//! `crosspool extract`: images in, feature shards out.

use super::engine::{apply_precision_on_all, Device, Engine, Precision};
use crosspool::choice::value_name;
use crosspool::extract::{self, ExtractConfig};
use crosspool::features::{FeatureRequest, NormPreset as Norm, Pooling};
use crosspool::gpu::GpuOptions;
use crosspool::input::{DecodeLimits, DecodeMode, DecodeOptions, ImageId, ImageSource};
use crosspool::job::{ExtractJob, ExtractOptions};
use crosspool::pooling::{ChannelPooling, LocalWindow};
use crosspool::store::labels::{LabelSource, Labels};
use crosspool::store::shards::{part_prefix, settings_file};
use crosspool::store::writer::{OutputFormat, ShardWriter};
use crosspool::store::ExtractSettings;
use std::path::{Path, PathBuf};

/// Arguments of `extract`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    images: super::ImageInputs,
    #[command(flatten)]
    net: super::NetworkArgs,
    /// Layers t,t+1 to pool across [default: the paper's pair: vgg16 conv5_2,conv5_3; vgg19
    /// conv5_3,conv5_4; alexnet conv4,conv5; resnet50/101 layer4.1,layer4.2; with --pooling
    /// fc-conv the last conv layer and fc6]. fc6,fc8 with a --pca of fc6 is the paper's FC-FC. Baselines use the first.
    #[arg(long, value_delimiter = ',')]
    layers: Vec<String>,
    /// Pooling method.
    #[arg(long, value_parser = super::choice::choice::<Pooling>(), default_value_t = Pooling::CrossLayer)]
    pooling: Pooling,
    /// How cross-layer pooling combines the units: `sum` (the paper's method) or `max`
    /// (P_k = max_i a_ik x_i, element-wise).
    #[arg(long, value_parser = super::choice::choice::<ChannelPooling>(), default_value_t = ChannelPooling::Sum)]
    channel_pooling: ChannelPooling,
    /// Finest spatial-pyramid level for sum/max pooling (0: whole map; 2: 1+4+16 cells).
    #[arg(long, default_value_t = 0)]
    levels: u32,
    /// Local-feature window on layer t, MxN with odd sides.
    #[arg(long, default_value = "1x1", value_parser = super::parse_window)]
    window: LocalWindow,
    /// Images are resized to SIZE x SIZE (whole image, no crop).
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// JPEG decoding: `fast` decodes a JPEG at least twice SIZE on both sides at 1/2, 1/4 or
    /// 1/8 scale (libjpeg-turbo's scaled IDCT), `exact` at full size [default: fast; with
    /// --resume, the mode the run was started with].
    #[arg(long, value_parser = super::choice::choice::<DecodeMode>())]
    decode: Option<DecodeMode>,
    /// PCA of the local features (from `crosspool fit-pca`).
    #[arg(long)]
    pca: Option<PathBuf>,
    /// The added AConv layer (from `crosspool train-aconv`) whose activations guide the
    /// pooling of its layer's local features: `--layers fc6,aconv` (the default with it).
    #[arg(long)]
    aconv: Option<PathBuf>,
    /// Normalisation.
    #[arg(long, value_parser = super::choice::choice::<Norm>(), default_value_t = Norm::Paper)]
    norm: Norm,
    /// Stored format: floats, or sign codes (2-bit {-1,0,1} / 1-bit); `--quantize` is an alias.
    #[arg(long, alias = "quantize", value_parser = super::choice::choice::<OutputFormat>(), default_value_t = OutputFormat::F32)]
    format: OutputFormat,
    /// Images per GPU batch [default: from the device's buffer limit, at most 32].
    #[arg(long, value_parser = super::at_least_one)]
    batch: Option<usize>,
    /// Class labels to record in the manifests (for train-classifier): `folder` (each image's
    /// parent folder name, as in ImageFolder), a CSV (`path,label`) or JSON-lines
    /// (`{"path": ..., "label": ...}`) file whose relative paths are relative to it, or for
    /// tar shards `sidecar:FIELD` (the text of each sample's `.FIELD`, e.g. `sidecar:cls`)
    /// or `sidecar:FIELD:KEY` (a key of its JSON, e.g. `sidecar:json:label`). Every image
    /// must have one.
    #[arg(long)]
    labels: Option<String>,
    /// Output directory.
    #[arg(long, short)]
    out: PathBuf,
    /// Largest image file read, in bytes; larger files are recorded as failed (so is
    /// anything that is not a regular file: a FIFO, a device).
    #[arg(long, default_value_t = crosspool::input::DEFAULT_MAX_FILE_BYTES)]
    max_file_bytes: u64,
    /// Images per output shard.
    #[arg(long, value_parser = super::at_least_one, default_value_t = 256)]
    shard_rows: usize,
    /// Continue an interrupted run in --out: images already recorded are skipped.
    #[arg(long)]
    resume: bool,
    /// With --resume, try the images earlier runs recorded as failed again (a tar that was
    /// still being written, files since repaired); each image keeps one manifest line.
    #[arg(long, requires = "resume")]
    retry_failed: bool,
    /// Process only part I of N of the input list (0-based), e.g. 3/8 in a Slurm array or an
    /// indexed Kubernetes job; parts write differently named shards into the same --out.
    #[arg(long, value_parser = parse_part)]
    shard: Option<(usize, usize)>,
    /// Where the network runs.
    #[arg(long, value_parser = super::choice::choice::<Device>(), default_value_t = Device::Auto)]
    device: Device,
    #[command(flatten)]
    run: super::RunArgs,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// What to extract, as these arguments ask.
    fn options(&self) -> ExtractOptions {
        ExtractOptions {
            weights: self.net.weights.clone(),
            model: self.net.model,
            features: FeatureRequest {
                layers: self.layers.clone(),
                pooling: self.pooling,
                channel_pooling: self.channel_pooling,
                window: self.window,
                levels: self.levels,
                norm: self.norm,
            },
            size: self.size,
            pca: self.pca.clone(),
            aconv: self.aconv.clone(),
        }
    }

    /// Arguments that extract `inputs` into `out` as the run that wrote `s` did (network,
    /// weights, layers, pooling, window, PCA, normalisation, size, decoding, format): for
    /// commands that need features comparable to an earlier extraction's.
    pub fn like(
        s: &ExtractSettings,
        inputs: Vec<PathBuf>,
        out: PathBuf,
        device: Device,
        quiet: bool,
    ) -> Self {
        Args {
            images: super::ImageInputs { inputs },
            net: super::NetworkArgs {
                weights: PathBuf::from(&s.weights),
                model: Some(s.arch),
            },
            layers: s.layers.clone(),
            pooling: s.pooling,
            channel_pooling: s.channel_pooling,
            levels: s.levels,
            window: s.window,
            size: s.size,
            decode: Some(s.decode),
            pca: s.pca.as_ref().map(PathBuf::from),
            aconv: s.aconv.as_ref().map(PathBuf::from),
            norm: s.norm,
            format: s.format,
            batch: None,
            labels: None,
            out,
            max_file_bytes: crosspool::input::DEFAULT_MAX_FILE_BYTES,
            shard_rows: 256,
            resume: false,
            retry_failed: false,
            shard: None,
            device,
            run: super::RunArgs {
                devices: None,
                in_flight: None,
                precision: Precision::recorded(s.precision, s.products),
            },
            quiet,
            json: false,
        }
    }
}

fn parse_part(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not of the form I/N with 0 <= I < N");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n) = (
        i.trim().parse::<usize>().map_err(|_| bad())?,
        n.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The images in order, each once by identity (another spelling of a path, or a link to a
/// file already listed, names the same image; so does a tar listed twice) and with that
/// identity, and how many inputs repeated one.
fn distinct_images(images: Vec<ImageSource>) -> (Vec<(ImageSource, ImageId)>, usize) {
    let mut seen = std::collections::HashSet::new();
    let before = images.len();
    let kept: Vec<(ImageSource, ImageId)> = images
        .into_iter()
        .map(|p| {
            let id = p.identity();
            (p, id)
        })
        .filter(|(_, id)| seen.insert(id.clone()))
        .collect();
    let repeats = before - kept.len();
    (kept, repeats)
}

/// The images of part `I/N` (every N-th, from the I-th) and that part's file-name prefix.
fn select_part<T>(images: Vec<T>, part: Option<(usize, usize)>) -> (Vec<T>, String) {
    match part {
        Some((i, n)) => (
            images
                .into_iter()
                .enumerate()
                .filter(|(k, _)| k % n == i)
                .map(|(_, p)| p)
                .collect(),
            part_prefix(i, n),
        ),
        None => (images, String::new()),
    }
}

/// The decoding mode of the run being resumed in `out`, if there is one whose settings can
/// be read (a run that cannot is refused, with the reason, when its shards are opened).
fn recorded_decode(resume: bool, out: &Path, prefix: &str) -> Option<DecodeMode> {
    let path = out.join(settings_file(prefix));
    let text = std::fs::read_to_string(&path).ok().filter(|_| resume)?;
    ExtractSettings::from_json(&text, &path.display().to_string())
        .ok()
        .map(|s| s.decode)
}

/// A progress bar on a terminal, or nothing with `--quiet`.
fn progress_bar(quiet: bool, len: usize) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images  {per_sec}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}

/// Runs `extract`; returns the number of images that failed.
pub fn run(opts: &GpuOptions, a: Args) -> anyhow::Result<usize> {
    let started = std::time::Instant::now();
    let job = ExtractJob::prepare(a.options())?;
    for w in &job.warnings {
        eprintln!("extract: warning: {w}");
    }
    let (arch, spec, weights) = (job.arch, &job.spec, &job.weights);

    let (listed, duplicates) = distinct_images(a.images.sources()?);
    let total_listed = listed.len();
    anyhow::ensure!(
        total_listed > 0,
        "no images found in {}",
        show_inputs(&a.images.inputs)
    );
    let (mut images, prefix) = select_part(listed, a.shard);
    let labels = match &a.labels {
        Some(src) => {
            let labels = Labels::load(LabelSource::parse(src))?;
            labels.check_all_sources_labelled(images.iter().map(|(s, _)| s))?;
            Some(labels)
        }
        None => None,
    };

    let mut engines = super::engine::open_engines(a.device, a.run.devices.as_ref(), opts)?;
    let storage = apply_precision_on_all(&mut engines, a.run.precision)?;
    let products = engines[0].products();
    let engine = &engines[0];
    let batch = a
        .batch
        .unwrap_or_else(|| engine.default_batch(weights, spec, a.size));
    // The network's activations first (the extractors allocate some), then the features.
    let fits = |shape| -> crosspool::Result<()> {
        for e in &engines {
            crosspool::engine::check_fits(e.memory_limit(), weights, spec, a.size, shape, batch)?;
        }
        Ok(())
    };
    fits(None)?;
    let extractors = job.extractors(&engines, storage)?;
    let feature_shape = extractors[0].feature_shape(a.size as usize)?;
    fits(Some(feature_shape))?;
    let decode = a
        .decode
        .or_else(|| recorded_decode(a.resume, &a.out, &prefix))
        .unwrap_or_default();
    let settings = job.settings((storage, products), decode, a.format, feature_shape)?;
    let (writer, done) = ShardWriter::open_with(
        &a.out,
        &prefix,
        &settings,
        a.shard_rows,
        a.resume,
        a.retry_failed,
    )?;
    let earlier_failures = writer.earlier_failures();
    let writer = match labels {
        Some(l) => writer.with_labels(l),
        None => writer,
    };
    let row_shape = writer.row_shape();
    let before = images.len();
    // Identity, not spelling: ./d/a.jpg and /abs/d/a.jpg are one image.
    images.retain(|(_, id)| !done.contains(id));
    let skipped = before - images.len();
    let images: Vec<ImageSource> = images.into_iter().map(|(p, _)| p).collect();

    let described = engines
        .iter()
        .map(Engine::describe)
        .collect::<Vec<_>>()
        .join(" + ");
    let bar = progress_bar(a.quiet, images.len());
    if !a.quiet {
        eprintln!(
            "extract: {} images ({skipped} already done) with {arch} {}, norm {}, {} at {}x{} ({} decoding), batch {batch}, on {}",
            images.len(),
            spec.repr,
            value_name(&a.norm),
            value_name(&a.format),
            a.size,
            a.size,
            value_name(&decode),
            described
        );
    }
    let cfg = ExtractConfig {
        size: a.size,
        batch,
        format: a.format,
        decode: DecodeOptions {
            mode: decode,
            limits: DecodeLimits {
                max_file_bytes: a.max_file_bytes,
                ..DecodeLimits::default()
            },
        },
    };
    let progress = |done: usize, failed: usize| {
        bar.set_position(done as u64);
        if failed > 0 {
            bar.set_message(format!("{failed} failed"));
        }
    };
    let n_new = images.len();
    let mut runners = Vec::new();
    for x in &extractors {
        for _ in 0..a.run.in_flight.unwrap_or_else(|| x.default_in_flight()) {
            runners.push(x.runner(&cfg)?);
        }
    }
    let stats = extract::run_on_devices(
        runners.iter_mut().map(|r| r.as_mut()).collect(),
        weights.preprocess,
        images,
        writer,
        &cfg,
        &progress,
    )?;
    bar.finish_and_clear();
    let counts = RunCounts {
        duplicates,
        listed: total_listed,
        this_part: before,
        skipped,
        processed: n_new,
        earlier_failures,
    };
    print_summary(
        &a,
        &described,
        &counts,
        &stats,
        row_shape,
        started.elapsed().as_secs_f64(),
    );
    // Images that failed before and were not retried still have no features: exit 2.
    Ok(stats.failed + earlier_failures)
}

/// How many images a run listed, skipped and processed.
struct RunCounts {
    /// Inputs that named an image already listed.
    duplicates: usize,
    listed: usize,
    this_part: usize,
    skipped: usize,
    processed: usize,
    /// Images that failed in the runs resumed, not tried again.
    earlier_failures: usize,
}

/// The closing summary: JSON on standard output with `--json`, else a line on standard error
/// (with `--quiet`, only when images failed).
fn print_summary(
    a: &Args,
    device: &str,
    n: &RunCounts,
    stats: &crosspool::store::writer::WriteStats,
    row_shape: [usize; 2],
    secs: f64,
) {
    let per_second = if secs > 0.0 {
        n.processed as f64 / secs
    } else {
        0.0
    };
    if a.json {
        let summary = serde_json::json!({
            "out": a.out.display().to_string(),
            "device": device,
            "images_listed": n.listed,
            "duplicates_skipped": n.duplicates,
            "images_this_part": n.this_part,
            "already_done": n.skipped,
            "processed": n.processed,
            "ok": stats.ok,
            "failed": stats.failed,
            "failed_earlier": n.earlier_failures,
            "shards_written": stats.shards,
            "feature_shape": row_shape,
            "seconds": secs,
            "images_per_second": per_second,
        });
        println!("{summary}");
    } else if !a.quiet || stats.failed > 0 || n.earlier_failures > 0 {
        if n.duplicates > 0 {
            eprintln!(
                "extract: {} input(s) named an image already listed (another spelling or a link); each image is extracted once",
                n.duplicates
            );
        }
        eprintln!(
            "extract: {} ok, {} failed, {} skipped as already done; {} shard(s) in {} ({per_second:.1} images/s)",
            stats.ok,
            stats.failed,
            n.skipped,
            stats.shards,
            a.out.display(),
        );
        if n.earlier_failures > 0 {
            eprintln!(
                "extract: {} image(s) failed in earlier runs of this part and were not tried again (--retry-failed tries them)",
                n.earlier_failures
            );
        }
        if stats.failed + n.earlier_failures > 0 {
            eprintln!(
                "extract: the failed images and their reasons are in the shard manifests (*.jsonl)"
            );
        }
    }
}

/// The inputs as a user typed them, for messages.
fn show_inputs(inputs: &[PathBuf]) -> String {
    inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
