//! `crosspool index`, `crosspool search` and `crosspool eval`: retrieval over extracted
//! features with the paper's eq. 3.

use super::engine::{Device, Engine, Precision};
use anyhow::Context;
use crosspool::gpu::GpuOptions;
use crosspool::pooling::Quantization;
use crosspool::retrieval::eval::load_ground_truth;
use crosspool::retrieval::query::{self, Searcher};
use crosspool::retrieval::search::{evaluate, Scorer};
use crosspool::retrieval::{RetrievalIndex, Storage};
use std::path::PathBuf;

/// How `index` stores the features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Binarize {
    /// 1-bit codes for cross-layer features (the paper's retrieval setting), floats otherwise.
    Auto,
    /// 1-bit sign codes: +1 / -1.
    Bits1,
    /// 2-bit sign codes: +1 / 0 / -1.
    Sign2,
    /// Keep floats (full-precision cosine; 32 bits a value).
    None,
}

/// Arguments of `index`.
#[derive(clap::Args)]
pub struct IndexArgs {
    /// Directory `crosspool extract` wrote (all its parts are indexed).
    features: PathBuf,
    /// Output directory of the index.
    #[arg(long, short)]
    out: PathBuf,
    /// Storage of the features.
    #[arg(long, value_enum, default_value_t = Binarize::Auto)]
    binarize: Binarize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Number of pooling channels to compare: a count, or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channels(pub Option<usize>);

fn parse_channels(s: &str) -> Result<Channels, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(Channels(None));
    }
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!(
            "'{s}' is not a positive number of channels or 'all'"
        )),
        Ok(k) => Ok(Channels(Some(k))),
    }
}

/// Arguments shared by `search` and `eval`.
#[derive(clap::Args)]
pub struct ScoreArgs {
    /// Index directory (from `crosspool index`).
    #[arg(long)]
    index: PathBuf,
    /// Pooling channels compared (eq. 3): the K with the largest mean activation of layer t+1
    /// in the query, or `all` [default: 50 for cross-layer indexes, all otherwise].
    #[arg(short = 'k', long = "channels", value_parser = parse_channels)]
    channels: Option<Channels>,
    /// Where queries are extracted and scored (see `extract --device`).
    #[arg(long, value_parser = super::choice::choice::<Device>(), default_value_t = Device::Auto)]
    device: Device,
    /// Print results as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `search`.
#[derive(clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    score: ScoreArgs,
    /// Query images (image files, or tar shards whose images are each a query).
    #[arg(long, required = true, num_args = 1..)]
    query: Vec<PathBuf>,
    /// Results per query.
    #[arg(long, default_value_t = 10, value_parser = super::at_least_one)]
    top: usize,
    /// Weights file [default: the one the index was extracted with].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// How the queries' network computes (see `extract --precision`) [default: as the index
    /// was extracted].
    #[arg(long, value_parser = super::choice::choice::<Precision>())]
    precision: Option<Precision>,
}

/// Arguments of `eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    score: ScoreArgs,
    /// Ground truth, JSON lines: {"query": NAME, "relevant": [NAME...], "junk": [NAME...]};
    /// names are index paths or their trailing components.
    #[arg(long)]
    ground_truth: PathBuf,
    /// Same as --device cpu (kept for scripts written before --device).
    #[arg(long, hide = true)]
    cpu: bool,
}

/// Runs `index`; returns the number of images left out because their values are corrupt.
pub fn run_index(a: IndexArgs) -> anyhow::Result<usize> {
    let storage = match a.binarize {
        Binarize::Auto => Storage::Auto,
        Binarize::Bits1 => Storage::Codes(Quantization::Bits1),
        Binarize::Sign2 => Storage::Codes(Quantization::Sign2),
        Binarize::None => Storage::Floats,
    };
    let (index, stats) = RetrievalIndex::build(&a.features, storage)
        .with_context(|| format!("indexing {}", a.features.display()))?;
    anyhow::ensure!(
        !index.is_empty(),
        "no image of {} has a feature ({} failed in extraction, {} left out here): an empty index could not be searched; nothing written",
        a.features.display(),
        stats.failed,
        stats.rejected.len()
    );
    index
        .save(&a.out)
        .with_context(|| format!("writing the index to {}", a.out.display()))?;
    let kind = index.kind();
    let summary = serde_json::json!({
        "out": a.out.display().to_string(),
        "images": stats.images,
        "failed_in_extraction": stats.failed,
        "rejected": stats.rejected.iter().map(|(p, why)| serde_json::json!({"path": p, "reason": why})).collect::<Vec<_>>(),
        "shards": stats.shards,
        "kind": kind,
        "rows": index.rows,
        "cols": index.cols,
        "bytes_per_image": index.bytes_per_image(),
        "channel_selection": index.guide_mean.is_some(),
    });
    if a.json {
        println!("{summary}");
    } else {
        eprintln!(
            "index: {} images ({} failed in extraction, left out) from {} shard(s) into {}: {kind}, {} x {} per image, {} bytes each{}",
            stats.images,
            stats.failed,
            stats.shards,
            a.out.display(),
            index.rows,
            index.cols,
            index.bytes_per_image(),
            if index.guide_mean.is_some() { ", with layer t+1 means for channel selection" } else { "" }
        );
    }
    for (path, why) in &stats.rejected {
        eprintln!("index: left out {path}: {why}");
    }
    Ok(stats.rejected.len())
}

/// The index at `path`, refused when it holds no images.
pub fn load_index(path: &std::path::Path) -> anyhow::Result<RetrievalIndex> {
    let index = RetrievalIndex::load(path)
        .with_context(|| format!("loading the index {}", path.display()))?;
    anyhow::ensure!(
        !index.is_empty(),
        "the index {} holds no images",
        path.display()
    );
    Ok(index)
}

/// Runs `search`; returns the number of query images that could not be read.
pub fn run_search(opts: &GpuOptions, a: SearchArgs) -> anyhow::Result<usize> {
    let index = load_index(&a.score.index)?;
    let mut engine = Engine::open(a.score.device, opts)?;
    let (job, storage) = query::prepare(&index, &mut engine, a.weights.clone(), a.precision)?;
    let extractor = job.extractor_on(&engine, storage)?;
    let scorer = Scorer::new(&engine, &index)?;
    let batch = a.query.len().clamp(1, 8);
    let mut searcher = Searcher::new(&index, &job, extractor.as_ref(), &scorer, batch)?;
    let queries = crosspool::input::expand_sources(a.query.clone());
    let results = searcher.search(queries, a.score.channels.map(|c| c.0), a.top)?;
    let device = engine.describe();
    let failed = results.iter().filter(|r| r.outcome.is_err()).count();
    if !a.score.json && failed < results.len() {
        eprintln!("search: queries extracted and scored on {device}");
    }
    for r in &results {
        let ranking = match &r.outcome {
            Ok(ranking) => ranking,
            Err(reason) => {
                eprintln!("search: {}: {reason}", r.name);
                if a.score.json {
                    // Every query is a line of the output, those that could not be read too.
                    println!("{}", serde_json::json!({"query": r.name, "failed": reason}));
                }
                continue;
            }
        };
        if a.score.json {
            let hits: Vec<_> = ranking
                .hits
                .iter()
                .map(|&(i, s)| serde_json::json!({"path": index.paths[i], "score": s}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"query": r.name, "channels": ranking.channels, "device": device, "results": hits})
            );
        } else {
            println!("{}", r.name);
            for (k, &(i, s)) in ranking.hits.iter().enumerate() {
                println!("  {:>3}  {:>12}  {}", k + 1, format!("{s}"), index.paths[i]);
            }
        }
    }
    Ok(failed)
}

/// Runs `eval`.
pub fn run_eval(opts: &GpuOptions, a: EvalArgs) -> anyhow::Result<()> {
    let index = load_index(&a.score.index)?;
    let truth = load_ground_truth(&a.ground_truth, &index.paths)?;
    let device = if a.cpu { Device::Cpu } else { a.score.device };
    let engine = Engine::open(device, opts)?;
    let scorer = Scorer::new(&engine, &index)?;
    let e = evaluate(&index, &truth, &scorer, a.score.channels.map(|c| c.0))?;
    let (seconds, device) = (e.seconds, engine.describe());
    let (n, nq) = (index.len(), truth.len() as f64);
    let per_second = if seconds > 0.0 {
        nq * n as f64 / seconds
    } else {
        0.0
    };
    if a.score.json {
        let summary = serde_json::json!({
            "index": a.score.index.display().to_string(),
            "images": n,
            "queries": truth.len(),
            "channels": e.channels,
            "rows": index.rows,
            "kind": index.kind(),
            "bytes_per_image": index.bytes_per_image(),
            "map": e.map,
            "recall_at_1": e.recall_at_1,
            "device": device,
            "score_seconds": seconds,
            "comparisons_per_second": per_second,
            "per_query": e.per_query.iter().map(|q| serde_json::json!({"query": q.name, "ap": q.ap, "hit_at_1": q.hit_at_1})).collect::<Vec<_>>(),
        });
        println!("{summary}");
    } else {
        println!(
            "mAP {:.4}  recall@1 {:.4}  ({} queries, {} images, {} of {} channels, {} bytes/image)",
            e.map,
            e.recall_at_1,
            truth.len(),
            n,
            e.channels,
            index.rows,
            index.bytes_per_image()
        );
        println!("scoring: {seconds:.3} s on {device}, {per_second:.3e} image comparisons/s");
    }
    Ok(())
}
