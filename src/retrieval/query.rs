//! Query images searched in an index: extracted as the index's features were, encoded as the
//! index stores them, scored with eq. 3 and ranked. What `search` and `serve` share.

use super::score::rank;
use super::search::{channel_selection, Scorer};
use super::RetrievalIndex;
use crate::engine::{Engine, FeatureDevice, Precision};
use crate::error::{Error, Result};
use crate::extract::{self, BatchRunner, ExtractConfig};
use crate::gpu::Dtype;
use crate::input::{DecodeLimits, DecodeOptions, ImageSource};
use crate::job::{ExtractJob, ExtractOptions};
use crate::model::Preprocess;
use crate::store::writer::{OutputFormat, Row, RowData};
use std::path::PathBuf;

/// The extraction job that computes queries for `index`: its recorded settings, with
/// `weights` in place of the recorded weights file when given (moved weights).
fn query_job(index: &RetrievalIndex, weights: Option<PathBuf>) -> Result<ExtractJob> {
    let recipe = &index.settings;
    let mut options = ExtractOptions::like(recipe);
    if let Some(w) = weights {
        options.weights = w;
    }
    ExtractJob::prepare(options).map_err(|e| {
        Error::Config(format!(
            "extracting the queries as the index was (with the weights {}; pass --weights if they moved): {e}",
            recipe.weights
        ))
    })
}

/// The precision queries are computed in: `chosen`, or as the index's features were.
fn query_precision(index: &RetrievalIndex, chosen: Option<Precision>) -> Precision {
    chosen.unwrap_or_else(|| Precision::recorded(index.settings.precision, index.settings.products))
}

/// One query's result.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The query image's name.
    pub name: String,
    /// Its ranking, or why the image could not be read.
    pub outcome: std::result::Result<Ranking, String>,
}

/// The best images of the index for one query.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking {
    /// Pooling channels compared (eq. 3's K).
    pub channels: usize,
    /// `(image index, score)`, best first.
    pub hits: Vec<(usize, f32)>,
}

/// Extracts, scores and ranks queries against one index on one device, with one runner:
/// built once, used for many queries.
pub struct Searcher<'a> {
    index: &'a RetrievalIndex,
    scorer: &'a Scorer<'a>,
    runner: Box<dyn BatchRunner + Send + 'a>,
    preprocess: Preprocess,
    cfg: ExtractConfig,
}

impl<'a> Searcher<'a> {
    /// A searcher of `index` with queries from `extractor` (of `job`, on the engine the
    /// `scorer` runs on), `batch` queries extracted at a time.
    pub fn new(
        index: &'a RetrievalIndex,
        job: &ExtractJob,
        extractor: &'a dyn FeatureDevice,
        scorer: &'a Scorer<'a>,
        batch: usize,
    ) -> Result<Self> {
        let recipe = &index.settings;
        let cfg = ExtractConfig {
            size: recipe.size,
            batch: batch.max(1),
            format: OutputFormat::F32,
            decode: DecodeOptions {
                mode: recipe.decode,
                limits: DecodeLimits::default(),
            },
        };
        Ok(Searcher {
            index,
            scorer,
            runner: extractor.runner(&cfg)?,
            preprocess: job.weights.preprocess,
            cfg,
        })
    }

    /// The index searched.
    pub fn index(&self) -> &RetrievalIndex {
        self.index
    }

    /// The `top` best images for each of `queries`, in order, comparing `channels` (as
    /// [`channel_selection`] takes them). An image that cannot be read is its own result's
    /// reason; the others are unaffected.
    pub fn search(
        &mut self,
        queries: Vec<ImageSource>,
        channels: Option<Option<usize>>,
        top: usize,
    ) -> Result<Vec<QueryResult>> {
        let index = self.index;
        let rows = extract::run_on(
            self.runner.as_mut(),
            self.preprocess,
            queries,
            Vec::new(),
            &self.cfg,
            &|_, _| {},
        )?;
        let mut results = Vec::with_capacity(rows.len());
        let (mut codes, mut guide, mut scored) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            match row {
                Row::Ok {
                    source,
                    values: RowData::F32(v),
                    guide_mean,
                } => {
                    if v.len() != index.rows * index.cols {
                        return Err(Error::Config(format!(
                            "the query feature has {} values, the index {} x {}: the index was built from other settings",
                            v.len(),
                            index.rows,
                            index.cols
                        )));
                    }
                    codes.extend(index.encode_query(v));
                    guide.push(guide_mean);
                    scored.push(results.len());
                    results.push(QueryResult {
                        name: source.name().display().to_string(),
                        outcome: Err(String::new()),
                    });
                }
                Row::Ok { source, .. } => {
                    return Err(Error::Config(format!(
                        "{}: unexpected packed query feature",
                        source.name().display()
                    )))
                }
                Row::Failed { source, reason } => results.push(QueryResult {
                    name: source.name().display().to_string(),
                    outcome: Err(reason),
                }),
            }
        }
        if scored.is_empty() {
            return Ok(results);
        }
        let (sel, ksel) = channel_selection(index, &guide, channels)?;
        let scores = self.scorer.score(&codes, &sel, ksel)?;
        let n = index.len();
        for (q, &r) in scored.iter().enumerate() {
            let s = &scores[q * n..(q + 1) * n];
            let hits = rank(s, top, None).into_iter().map(|i| (i, s[i])).collect();
            results[r].outcome = Ok(Ranking {
                channels: ksel,
                hits,
            });
        }
        Ok(results)
    }
}

/// Opens what a [`Searcher`] borrows for `index` on `engine`: the query job and the precision
/// applied to the engine (`None`: as the index was extracted). The caller then builds the
/// extractor (`job.extractor_on(engine, storage)`) and the scorer.
pub fn prepare(
    index: &RetrievalIndex,
    engine: &mut Engine,
    weights: Option<PathBuf>,
    precision: Option<Precision>,
) -> Result<(ExtractJob, Dtype)> {
    let job = query_job(index, weights)?;
    let storage = engine.apply_precision(query_precision(index, precision))?;
    Ok((job, storage))
}
