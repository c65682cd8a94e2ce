//! `crosspool serve`: an index searched from a browser or over HTTP.

mod files;
mod http;
mod service;

use super::engine::{Device, Precision};
use crosspool::gpu::GpuOptions;
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Index directory (from `crosspool index`).
    #[arg(long)]
    index: PathBuf,
    /// Directory whose images the page shows as thumbnails, and queries by path name; only
    /// files under it are ever read (no `..`, absolute paths, or links out of it).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Address to listen on; 127.0.0.1 serves this machine only (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Where queries are extracted and scored (see `extract --device`).
    #[arg(long, value_parser = super::choice::choice::<Device>(), default_value_t = Device::Auto)]
    device: Device,
    /// Weights file [default: the one the index was extracted with].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// How the queries' network computes (see `extract --precision`) [default: as the index
    /// was extracted].
    #[arg(long, value_parser = super::choice::choice::<Precision>())]
    precision: Option<Precision>,
    /// Results per query when a request names no `top`.
    #[arg(long, default_value_t = 10, value_parser = super::at_least_one)]
    top: usize,
    /// Largest request body (an uploaded image and its form), in MiB.
    #[arg(long, default_value_t = 32, value_parser = super::at_least_one)]
    max_upload_mib: usize,
    /// Queries extracted together at most (concurrent requests share one model and batch).
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one)]
    batch: usize,
    /// Search requests in the server at once, uploads included; more are answered 503 (busy).
    #[arg(long, default_value_t = 64, value_parser = super::at_least_one)]
    queue: usize,
}

/// Runs `serve` until interrupted.
pub fn run(opts: &GpuOptions, a: ServeArgs) -> anyhow::Result<()> {
    let images = a
        .images
        .as_deref()
        .map(files::ImageRoot::open)
        .transpose()?;
    let (service, info) = service::Service::start(
        opts.clone(),
        service::ServiceConfig {
            index: a.index.clone(),
            device: a.device,
            weights: a.weights.clone(),
            precision: a.precision,
            batch: a.batch,
            queue: a.queue,
        },
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host, a.port))
            .await
            .map_err(|e| anyhow::anyhow!("listening on {}:{}: {e}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "serve: {} images of {} on {}; open http://{addr}/ (Ctrl-C stops)",
            info.images,
            a.index.display(),
            info.device
        );
        let state = Arc::new(http::AppState {
            service,
            info,
            images,
            default_top: a.top,
            max_body: a.max_upload_mib << 20,
            file_work: tokio::sync::Semaphore::new(http::FILE_WORK),
            requests: http::RequestSlots::new(a.queue),
        });
        let app = http::router(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| anyhow::anyhow!("serving on {addr}: {e}"))
    })
}
