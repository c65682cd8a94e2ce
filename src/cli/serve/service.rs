//! The search service behind `serve`: one thread that owns the index, the loaded network and
//! the scorer, and answers queries from a bounded queue. Queries that wait together are
//! extracted as one batch, so concurrent requests share one model and one device.

use crate::cli::engine::{Device, Engine, Precision};
use crosspool::gpu::GpuOptions;
use crosspool::input::ImageSource;
use crosspool::retrieval::query::{self, QueryResult, Searcher};
use crosspool::retrieval::search::{Scorer, DEFAULT_CHANNELS};
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// What the service needs to start.
pub struct ServiceConfig {
    pub index: PathBuf,
    pub device: Device,
    pub weights: Option<PathBuf>,
    pub precision: Option<Precision>,
    /// Queries extracted together at most.
    pub batch: usize,
    /// Queries waiting at most; more are refused as busy.
    pub queue: usize,
}

/// One query.
pub struct Query {
    pub image: ImageSource,
    /// As `channel_selection` takes them.
    pub channels: Option<Option<usize>>,
    pub top: usize,
    pub reply: oneshot::Sender<Result<Answer, String>>,
}

/// What the page and `/api/info` show of the index.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IndexInfo {
    pub images: usize,
    pub device: String,
    pub network: String,
    pub layers: Vec<String>,
    pub size: u32,
    pub storage: String,
    /// The channels compared by default (eq. 3's K), `None` for all.
    pub default_channels: Option<usize>,
    /// Whether channels can be selected (a cross-layer index).
    pub selectable: bool,
}

/// A query's result, each hit's image named as the index names it.
pub struct Answer {
    pub result: QueryResult,
    /// `paths[j]`: the image of the result's hit `j`.
    pub paths: Vec<String>,
}

/// The service's queue, shared by the request handlers.
#[derive(Clone)]
pub struct Service {
    queue: mpsc::Sender<Query>,
}

/// A query the service did not take.
pub enum NotTaken {
    /// The queue is full.
    Busy,
    /// The service stopped (its device failed).
    Stopped,
}

impl Service {
    /// Loads the index and the network on the device, on a thread of their own; returns once
    /// they are ready (or failed to load).
    pub fn start(opts: GpuOptions, cfg: ServiceConfig) -> anyhow::Result<(Service, IndexInfo)> {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("crosspool-search".into())
            .spawn(move || {
                if let Err(e) = serve_queries(opts, cfg, rx, &ready_tx) {
                    // Unheard if the start already succeeded: the queue then closes, and
                    // requests are answered that the service stopped.
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok((Service { queue: tx }, info)),
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            Err(_) => anyhow::bail!("the search service stopped while starting"),
        }
    }

    /// Queues `query`; its answer comes on its reply channel.
    pub fn submit(&self, query: Query) -> Result<(), NotTaken> {
        self.queue.try_send(query).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NotTaken::Busy,
            mpsc::error::TrySendError::Closed(_) => NotTaken::Stopped,
        })
    }
}

/// The service thread: loads everything, reports ready, then answers queries until every
/// sender is gone.
fn serve_queries(
    opts: GpuOptions,
    cfg: ServiceConfig,
    mut rx: mpsc::Receiver<Query>,
    ready: &std::sync::mpsc::Sender<Result<IndexInfo, String>>,
) -> anyhow::Result<()> {
    let index = crate::cli::retrieval::load_index(&cfg.index)?;
    let mut engine = Engine::open(cfg.device, &opts)?;
    let (job, storage) = query::prepare(&index, &mut engine, cfg.weights.clone(), cfg.precision)?;
    let extractor = job.extractor_on(&engine, storage)?;
    let scorer = Scorer::new(&engine, &index)?;
    let mut searcher = Searcher::new(&index, &job, extractor.as_ref(), &scorer, cfg.batch)?;
    let s = &index.settings;
    let selectable = index.guide_mean.is_some();
    let _ = ready.send(Ok(IndexInfo {
        images: index.len(),
        device: engine.describe(),
        network: s.arch.to_string(),
        layers: s.layers.clone(),
        size: s.size,
        storage: index.kind().to_string(),
        default_channels: selectable.then_some(DEFAULT_CHANNELS.min(index.rows)),
        selectable,
    }));
    while let Some(first) = rx.blocking_recv() {
        let mut waiting = vec![first];
        while waiting.len() < cfg.batch.max(1) {
            match rx.try_recv() {
                Ok(q) => waiting.push(q),
                Err(_) => break,
            }
        }
        // One extraction per choice of channels (requests almost always share the default).
        while !waiting.is_empty() {
            let channels = waiting[0].channels;
            let (group, rest): (Vec<Query>, Vec<Query>) =
                waiting.into_iter().partition(|q| q.channels == channels);
            waiting = rest;
            answer(&mut searcher, group, channels);
        }
    }
    Ok(())
}

/// Answers `group` (queries with the same `channels`) with one search.
fn answer(searcher: &mut Searcher<'_>, group: Vec<Query>, channels: Option<Option<usize>>) {
    let top = group.iter().map(|q| q.top).max().unwrap_or(1);
    let (images, replies): (Vec<ImageSource>, Vec<_>) = group
        .into_iter()
        .map(|q| (q.image, (q.top, q.reply)))
        .unzip();
    match searcher.search(images, channels, top) {
        Ok(results) => {
            let index = searcher.index();
            for (mut result, (top, reply)) in results.into_iter().zip(replies) {
                let paths = match &mut result.outcome {
                    Ok(ranking) => {
                        ranking.hits.truncate(top);
                        let path = |&(i, _): &(usize, f32)| index.paths[i].clone();
                        ranking.hits.iter().map(path).collect()
                    }
                    Err(_) => Vec::new(),
                };
                // A client that went away no longer waits for its answer.
                let _ = reply.send(Ok(Answer { result, paths }));
            }
        }
        Err(e) => {
            for (_, reply) in replies {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }
}
