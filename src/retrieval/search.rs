//! Queries scored against an index on a device, and an index evaluated against ground truth:
//! what `search`, `eval` and the Python package's `Index` share.

use super::eval::{average_precision, hit_at_1, Query};
use super::score::{rank, score_index_parallel, select_channels};
use super::RetrievalIndex;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuDatabase, ScoreKernel};

/// Eq. 3 against every image of an index, on the GPU scoring kernel (index uploaded once) or
/// on the CPU's cores. The scores are the same integers (codes) or f64 sums (floats) on both.
pub enum Scorer<'a> {
    /// On a GPU adapter, the index uploaded.
    Gpu(&'a GpuContext, Box<(GpuDatabase, ScoreKernel)>),
    /// On the CPU's cores.
    Cpu(&'a RetrievalIndex),
}

impl<'a> Scorer<'a> {
    /// A scorer of `index` on `engine`.
    pub fn new(engine: &'a Engine, index: &'a RetrievalIndex) -> Result<Self> {
        Ok(match engine {
            Engine::Gpu(ctx) => {
                Scorer::Gpu(ctx, Box::new((index.upload(ctx)?, ScoreKernel::new(ctx)?)))
            }
            Engine::Cpu(_) => Scorer::Cpu(index),
        })
    }

    /// `[q][images]` scores of `queries` (`[q][rows][row_len]`) over the channels `sel`.
    pub fn score(&self, queries: &[u32], sel: &[u32], ksel: usize) -> Result<Vec<f32>> {
        Ok(match self {
            Scorer::Gpu(ctx, gpu) => gpu.1.score(ctx, &gpu.0, queries, sel, ksel)?,
            Scorer::Cpu(index) => score_index_parallel(index, queries, sel, ksel),
        })
    }
}

/// Channels a query of a cross-layer index compares by default (eq. 3's K).
pub const DEFAULT_CHANNELS: usize = 50;

/// The channels each query compares, flattened `[queries][ksel]`, and `ksel`. `channels`:
/// `None` for the default (50 for cross-layer indexes, all otherwise), `Some(None)` for all,
/// `Some(Some(k))` for the `k` with the largest mean activation of layer t+1 in the query.
pub fn channel_selection(
    index: &RetrievalIndex,
    guide: &[Option<Vec<f32>>],
    channels: Option<Option<usize>>,
) -> Result<(Vec<u32>, usize)> {
    let k = match (channels, index.guide_mean.is_some()) {
        (Some(k), true) => k,
        (None, true) => Some(DEFAULT_CHANNELS),
        (Some(Some(_)), false) => return Err(Error::Config(
            "this index has no layer t+1 activations (it is not cross-layer), so channels cannot be selected; use -k all".into(),
        )),
        (_, false) => None,
    };
    let ksel = k.unwrap_or(index.rows).min(index.rows);
    let mut sel = Vec::with_capacity(guide.len() * ksel);
    for g in guide {
        match g {
            Some(m) => sel.extend(select_channels(m, k)),
            None => sel.extend(0..ksel as u32),
        }
    }
    Ok((sel, ksel))
}

/// One query's result in an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryScore {
    /// The query image, as the index names it.
    pub name: String,
    /// Average precision.
    pub ap: f64,
    /// Whether the first result is relevant.
    pub hit_at_1: bool,
}

/// An index evaluated against ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean average precision.
    pub map: f64,
    /// Share of queries whose first result is relevant.
    pub recall_at_1: f64,
    /// Channels compared per query.
    pub channels: usize,
    /// Seconds the scoring took (after an untimed first pass).
    pub seconds: f64,
    /// Per query.
    pub per_query: Vec<QueryScore>,
}

/// Scores every query of `truth` (images of the index, left out of their own rankings)
/// against the whole index with `scorer` and returns mAP and recall@1.
pub fn evaluate(
    index: &RetrievalIndex,
    truth: &[Query],
    scorer: &Scorer<'_>,
    channels: Option<Option<usize>>,
) -> Result<Evaluation> {
    if truth.is_empty() {
        return Err(Error::Config("the ground truth holds no queries".into()));
    }
    let per = index.rows * index.row_len();
    let all = index.words();
    let mut queries = Vec::with_capacity(truth.len() * per);
    let mut guide = Vec::new();
    for t in truth {
        queries.extend_from_slice(&all[t.query * per..(t.query + 1) * per]);
        guide.push(index.guide_mean_of(t.query).map(<[f32]>::to_vec));
    }
    let (sel, ksel) = channel_selection(index, &guide, channels)?;
    // Untimed first pass: pipeline compilation and first-touch allocation.
    scorer.score(&queries[..per], &sel[..ksel], ksel)?;
    let t = std::time::Instant::now();
    let scores = scorer.score(&queries, &sel, ksel)?;
    let seconds = t.elapsed().as_secs_f64();
    let n = index.len();
    let per_query: Vec<QueryScore> = truth
        .iter()
        .enumerate()
        .map(|(q, t)| {
            let ranking = rank(&scores[q * n..(q + 1) * n], n, Some(t.query));
            QueryScore {
                name: index.paths[t.query].clone(),
                ap: average_precision(&ranking, t),
                hit_at_1: hit_at_1(&ranking, t),
            }
        })
        .collect();
    let nq = truth.len() as f64;
    Ok(Evaluation {
        map: per_query.iter().map(|q| q.ap).sum::<f64>() / nq,
        recall_at_1: per_query.iter().filter(|q| q.hit_at_1).count() as f64 / nq,
        channels: ksel,
        seconds,
        per_query,
    })
}
