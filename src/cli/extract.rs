//! `crosspool extract`: images in, feature shards out.

use anyhow::Context;
use crosspool::extract::{self, ExtractConfig};
use crosspool::features::{FeatureSpec, Representation};
use crosspool::gpu::{Extractor, GpuContext, GpuOptions};
use crosspool::input::{collect_images, DecodeLimits};
use crosspool::model::{Arch, ModelWeights};
use crosspool::output::{OutputFormat, ShardWriter};
use crosspool::pca::Pca;
use crosspool::pooling::{LocalWindow, Normalization, RegionPoolMode};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Pooling method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooling {
    /// Cross-layer pooling (the paper's method) of the two --layers.
    CrossLayer,
    /// Baseline: Gram matrix of the first layer's local features.
    Gram,
    /// Baseline: sum pooling of the first layer (over a pyramid with --levels).
    Sum,
    /// Baseline: max pooling of the first layer (over a pyramid with --levels).
    Max,
}

/// Normalisation preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Norm {
    /// Per-channel L2, then signed square root (the paper, for classification).
    Paper,
    /// Per-channel L2, signed square root, global L2 (the paper, for retrieval).
    Retrieval,
    /// Signed square root and global L2 (for sum/max baselines).
    SqrtL2,
    /// Global L2 only (the SPoC retrieval baseline: sum pooling, then L2).
    L2,
    /// Raw pooled values.
    None,
}

impl Norm {
    fn get(self) -> Normalization {
        match self {
            Norm::Paper => Normalization::PAPER,
            Norm::Retrieval => Normalization::RETRIEVAL,
            Norm::SqrtL2 => Normalization {
                channel_l2: false,
                signed_sqrt: true,
                global_l2: true,
            },
            Norm::L2 => Normalization {
                channel_l2: false,
                signed_sqrt: false,
                global_l2: true,
            },
            Norm::None => Normalization::NONE,
        }
    }
}

/// Arguments of `extract`.
#[derive(clap::Args)]
pub struct Args {
    /// Images, directories (searched recursively), list files (*.txt / *.list: one path per
    /// line), or `-` to read paths from standard input.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Safetensors weights file.
    #[arg(long)]
    weights: PathBuf,
    /// Architecture, if the file's metadata does not name it.
    #[arg(long, value_enum)]
    model: Option<Arch>,
    /// Layers t,t+1 to pool across [default: the paper's pair: vgg16 conv5_2,conv5_3; vgg19
    /// conv5_3,conv5_4; alexnet conv4,conv5]. Baselines use the first.
    #[arg(long, value_delimiter = ',')]
    layers: Vec<String>,
    /// Pooling method.
    #[arg(long, value_enum, default_value_t = Pooling::CrossLayer)]
    pooling: Pooling,
    /// Finest spatial-pyramid level for sum/max pooling (0: whole map; 2: 1+4+16 cells).
    #[arg(long, default_value_t = 0)]
    levels: u32,
    /// Local-feature window on layer t, MxN with odd sides.
    #[arg(long, default_value = "1x1", value_parser = super::parse_window)]
    window: LocalWindow,
    /// Images are resized to SIZE x SIZE (whole image, no crop).
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// PCA of the local features (from `crosspool fit-pca`).
    #[arg(long)]
    pca: Option<PathBuf>,
    /// Normalisation.
    #[arg(long, value_enum, default_value_t = Norm::Paper)]
    norm: Norm,
    /// Stored format: floats, or sign codes (2-bit {-1,0,1} / 1-bit); `--quantize` is an alias.
    #[arg(long, alias = "quantize", value_enum, default_value_t = OutputFormat::F32)]
    format: OutputFormat,
    /// Images per GPU batch [default: from the device's buffer limit, at most 32].
    #[arg(long)]
    batch: Option<usize>,
    /// Output directory.
    #[arg(long, short)]
    out: PathBuf,
    /// Images per output shard.
    #[arg(long, default_value_t = 256)]
    shard_rows: usize,
    /// Continue an interrupted run in --out: images already recorded are skipped.
    #[arg(long)]
    resume: bool,
    /// Process only part I of N of the input list (0-based), e.g. 3/8 in a Slurm array or an
    /// indexed Kubernetes job; parts write differently named shards into the same --out.
    #[arg(long, value_parser = parse_part)]
    shard: Option<(usize, usize)>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
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

/// Files, directories, list files and `-`, expanded to image paths in order.
fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let read_list = |r: &mut dyn BufRead, from: &str| -> anyhow::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for line in r.lines() {
            let line = line.with_context(|| format!("reading {from}"))?;
            let t = line.trim();
            if !t.is_empty() && !t.starts_with('#') {
                out.push(PathBuf::from(t));
            }
        }
        Ok(out)
    };
    for p in inputs {
        let is_list = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "txt" || e == "list");
        if p.as_os_str() == "-" {
            paths.extend(read_list(&mut std::io::stdin().lock(), "standard input")?);
        } else if is_list && p.is_file() {
            let f =
                std::fs::File::open(p).with_context(|| format!("opening list {}", p.display()))?;
            paths.extend(read_list(
                &mut std::io::BufReader::new(f),
                &p.display().to_string(),
            )?);
        } else {
            paths.push(p.clone());
        }
    }
    // Directories expand; listed files that do not exist stay, to be recorded as failed.
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(collect_images(&[p])?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// Runs `extract`; returns the number of images that failed.
pub fn run(opts: &GpuOptions, a: Args) -> anyhow::Result<usize> {
    let started = std::time::Instant::now();
    let arch = ModelWeights::arch_of(&a.weights, a.model)?;
    let layers: Vec<String> = if a.layers.is_empty() {
        let (t, t1) = arch.default_pair();
        vec![t.into(), t1.into()]
    } else {
        a.layers.clone()
    };
    let spec = build_spec(arch, &layers, a.pooling, a.window, a.levels, a.norm)?;
    let weights = ModelWeights::load(&a.weights, Some(arch), Some(spec.deepest_layer(arch)?))?;
    let pca = a.pca.as_deref().map(Pca::load).transpose()?;

    let mut images = expand_inputs(&a.inputs)?;
    let total_listed = images.len();
    anyhow::ensure!(total_listed > 0, "no images found in {:?}", a.inputs);
    let prefix = match a.shard {
        Some((i, n)) => {
            images = images
                .into_iter()
                .enumerate()
                .filter(|(k, _)| k % n == i)
                .map(|(_, p)| p)
                .collect();
            format!("part{i}of{n}-")
        }
        None => String::new(),
    };

    let ctx = GpuContext::new(opts).context("opening the GPU")?;
    let extractor = Extractor::new(&ctx, &weights, spec.clone(), pca.as_ref())?;
    let probe_ws = extractor.workspace(
        &ctx,
        crosspool::shape::Shape4::new(1, a.size as usize, a.size as usize, 3),
    )?;
    let f = probe_ws.features();
    let (rows, cols) = (f.rows, f.cols);
    drop(probe_ws);
    let row_shape = match a.format {
        OutputFormat::Sign2 => [rows, cols.div_ceil(16)],
        OutputFormat::Bits1 => [rows, cols.div_ceil(32)],
        _ => [rows, cols],
    };
    let batch = a
        .batch
        .unwrap_or_else(|| default_batch(&ctx, &weights, &spec, a.size));
    anyhow::ensure!(batch > 0, "--batch must be at least 1");

    let canon = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let settings = HashMap::from([
        ("crosspool.arch".to_string(), arch.name().to_string()),
        ("crosspool.weights".to_string(), canon(&a.weights)),
        ("crosspool.layers".to_string(), layers.join(",")),
        ("crosspool.pooling".to_string(), value_name(&a.pooling)),
        (
            "crosspool.window".to_string(),
            format!("{}x{}", a.window.h, a.window.w),
        ),
        ("crosspool.levels".to_string(), a.levels.to_string()),
        ("crosspool.norm".to_string(), value_name(&a.norm)),
        ("crosspool.feature_rows".to_string(), rows.to_string()),
        ("crosspool.feature_cols".to_string(), cols.to_string()),
        ("crosspool.size".to_string(), a.size.to_string()),
        (
            "crosspool.pca".to_string(),
            a.pca.as_deref().map(canon).unwrap_or_default(),
        ),
        ("crosspool.format".to_string(), format!("{:?}", a.format)),
    ]);
    let (writer, done) = ShardWriter::open(
        &a.out,
        &prefix,
        a.format,
        row_shape,
        a.shard_rows,
        settings,
        a.resume,
    )?;
    let before = images.len();
    images.retain(|p| !done.contains(&p.display().to_string()));
    let skipped = before - images.len();

    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(images.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} images  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    if !a.quiet {
        eprintln!(
            "extract: {} images ({} already done) with {} {:?} at {}x{}, batch {batch}, on {}",
            images.len(),
            skipped,
            arch,
            spec.repr,
            a.size,
            a.size,
            ctx.describe()
        );
    }
    let cfg = ExtractConfig {
        size: a.size,
        batch,
        format: a.format,
        limits: DecodeLimits::default(),
    };
    let progress = |done: usize, failed: usize| {
        bar.set_position(done as u64);
        if failed > 0 {
            bar.set_message(format!("{failed} failed"));
        }
    };
    let n_new = images.len();
    let stats = extract::run(
        &ctx,
        &extractor,
        weights.preprocess,
        images,
        writer,
        &cfg,
        &progress,
    )?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "out": a.out.display().to_string(),
        "device": ctx.describe(),
        "images_listed": total_listed,
        "images_this_part": before,
        "already_done": skipped,
        "processed": n_new,
        "ok": stats.ok,
        "failed": stats.failed,
        "shards_written": stats.shards,
        "feature_shape": row_shape,
        "seconds": secs,
        "images_per_second": if secs > 0.0 { n_new as f64 / secs } else { 0.0 },
    });
    if a.json {
        println!("{summary}");
    } else if !a.quiet || stats.failed > 0 {
        eprintln!(
            "extract: {} ok, {} failed, {} skipped as already done; {} shard(s) in {} ({:.1} images/s)",
            stats.ok,
            stats.failed,
            skipped,
            stats.shards,
            a.out.display(),
            if secs > 0.0 { n_new as f64 / secs } else { 0.0 }
        );
        if stats.failed > 0 {
            eprintln!(
                "extract: the failed images and their reasons are in the shard manifests (*.jsonl)"
            );
        }
    }
    Ok(stats.failed)
}

/// The name clap shows for a value.
fn value_name<V: clap::ValueEnum>(v: &V) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// The feature spec that `extract`'s flags describe, checked against `arch`.
pub fn build_spec(
    arch: Arch,
    layers: &[String],
    pooling: Pooling,
    window: LocalWindow,
    levels: u32,
    norm: Norm,
) -> anyhow::Result<FeatureSpec> {
    let repr = match pooling {
        Pooling::CrossLayer => {
            anyhow::ensure!(
                layers.len() == 2,
                "cross-layer pooling needs two layers (--layers t,t+1), got {layers:?}"
            );
            Representation::CrossLayer {
                local: layers[0].clone(),
                guide: layers[1].clone(),
                window,
            }
        }
        Pooling::Gram => Representation::Gram {
            local: layers[0].clone(),
            window,
        },
        Pooling::Sum | Pooling::Max => Representation::Region {
            local: layers[0].clone(),
            mode: if pooling == Pooling::Sum {
                RegionPoolMode::Sum
            } else {
                RegionPoolMode::Max
            },
            levels,
        },
    };
    let spec = FeatureSpec {
        repr,
        norm: norm.get(),
    };
    spec.validate(arch)?;
    Ok(spec)
}

/// How an earlier `extract` run computed its features, read back from its settings, so that
/// query images can be extracted the same way.
pub struct Recipe {
    /// Weights file (absolute, as the run saw it).
    pub weights: PathBuf,
    /// Architecture.
    pub arch: Arch,
    /// Representation and normalisation.
    pub spec: FeatureSpec,
    /// Input size.
    pub size: u32,
    /// PCA file, if the run used one.
    pub pca: Option<PathBuf>,
}

impl Recipe {
    /// Reads the settings `extract` stores (in extract.json and every shard's metadata).
    pub fn from_settings(m: &std::collections::BTreeMap<String, String>) -> anyhow::Result<Self> {
        let get = |k: &str| {
            m.get(&format!("crosspool.{k}"))
                .map(String::as_str)
                .with_context(|| format!("the extraction settings lack crosspool.{k} (features written by an older crosspool? extract them again)"))
        };
        let arch: Arch = clap::ValueEnum::from_str(get("arch")?, true)
            .map_err(|e| anyhow::anyhow!("crosspool.arch: {e}"))?;
        let pooling: Pooling = clap::ValueEnum::from_str(get("pooling")?, true)
            .map_err(|e| anyhow::anyhow!("crosspool.pooling: {e}"))?;
        let norm: Norm = clap::ValueEnum::from_str(get("norm")?, true)
            .map_err(|e| anyhow::anyhow!("crosspool.norm: {e}"))?;
        let window = super::parse_window(get("window")?).map_err(anyhow::Error::msg)?;
        let levels = get("levels")?.parse().context("crosspool.levels")?;
        let layers: Vec<String> = get("layers")?.split(',').map(String::from).collect();
        let pca = get("pca")?;
        Ok(Recipe {
            weights: PathBuf::from(get("weights")?),
            arch,
            spec: build_spec(arch, &layers, pooling, window, levels, norm)?,
            size: get("size")?.parse().context("crosspool.size")?,
            pca: (!pca.is_empty()).then(|| PathBuf::from(pca)),
        })
    }
}

/// A batch that keeps the largest activation of one batch within a quarter of the device's
/// buffer limit (at most 1 GiB), between 1 and 32 images.
fn default_batch(ctx: &GpuContext, weights: &ModelWeights, spec: &FeatureSpec, size: u32) -> usize {
    let mut s = crosspool::shape::Shape4::new(1, size as usize, size as usize, 3);
    let mut largest = s.bytes_f32();
    let last = spec
        .deepest_layer(weights.arch)
        .and_then(|l| weights.arch.layer_index(l))
        .unwrap_or(0);
    for layer in weights.arch.layers().iter().take(last + 1) {
        let next = match &layer.kind {
            crosspool::model::LayerKind::Conv { spec, .. } => spec.output_shape(s),
            crosspool::model::LayerKind::MaxPool(p) => p.output_shape(s),
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
