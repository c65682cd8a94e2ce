//! The `crosspool` command-line tool.

mod cli;

use clap::{Parser, Subcommand};
use crosspool::gpu::{BackendChoice, GpuOptions};
use crosspool::model::{Arch, LayerKind, ModelWeights};
use crosspool::shape::Shape4;
use crosspool::tune::Autotune;
use std::path::PathBuf;

/// Cross-convolutional-layer pooling features on any GPU.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// GPU backend to use.
    #[arg(long, global = true, value_parser = cli::choice::choice::<BackendChoice>(), default_value_t = BackendChoice::Auto, env = "CROSSPOOL_BACKEND")]
    backend: BackendChoice,
    /// Use the adapter with this index in `crosspool info --list` (e.g. 3, to tell GPUs of
    /// one model apart), or whose name contains this text (case-insensitive), e.g. "llvmpipe".
    #[arg(long, global = true, env = "CROSSPOOL_ADAPTER")]
    adapter: Option<String>,
    /// Compile shaders without wgpu's injected bounds and division checks (faster; every
    /// kernel checks its own indices, but a kernel bug would be undefined behaviour). Also
    /// CROSSPOOL_UNCHECKED_SHADERS=1.
    #[arg(long, global = true)]
    unchecked_shaders: bool,
    /// Choose each convolution's tile by timing the candidates once per layer shape, batch
    /// and device, as cuDNN's benchmark mode does, keeping the winners in the cache file:
    /// auto does so on hardware GPUs, not on software adapters.
    #[arg(long, global = true, value_parser = cli::choice::choice::<Autotune>(), default_value_t = Autotune::Auto, env = "CROSSPOOL_AUTOTUNE")]
    autotune: Autotune,
    /// The autotuning cache file [default: conv-tiles.json in crosspool's folder of the user's
    /// cache directory, e.g. ~/.cache/crosspool/]. An unreadable or corrupt one is ignored
    /// with a warning and replaced.
    #[arg(long, global = true, env = "CROSSPOOL_AUTOTUNE_CACHE")]
    autotune_cache: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CPU backend (threads, convolution kernel), the chosen GPU adapter (its
    /// backend, features and limits, or why none opens) and what `--device auto` picks.
    Info {
        /// Fail if no GPU adapter opens (software ones count).
        #[arg(long)]
        require_gpu: bool,
        /// List every adapter the backend reaches, with the index `--adapter` accepts.
        #[arg(long)]
        list: bool,
    },
    /// Check a weights file and list the network's layers and their output shapes.
    ModelInfo {
        /// Safetensors weights file (see tools/ for converters).
        #[arg(long)]
        weights: PathBuf,
        /// Architecture, if the file's metadata does not name it.
        #[arg(long, value_parser = cli::choice::choice::<Arch>())]
        model: Option<Arch>,
        /// Input side in pixels for the listed shapes.
        #[arg(long, default_value_t = 224)]
        size: usize,
    },
    /// Fit a PCA of a layer's local features over a set of images (mean and covariance
    /// accumulated on the GPU, eigendecomposition on the CPU).
    FitPca(cli::fit_pca::Args),
    /// Extract features from images into sharded safetensors files with a manifest.
    /// Exits with status 2 if some images could not be read (they are listed, with the
    /// reason, in the manifests).
    Extract(cli::extract::Args),
    /// Time the feature pipeline on this device: per-stage times, images/s, GFLOP/s.
    Bench(cli::bench::Args),
    /// Build a retrieval index from extracted features: 1-bit sign codes of cross-layer
    /// features (the paper's setting), 2-bit codes, or floats.
    Index(cli::retrieval::IndexArgs),
    /// Rank an index's images for query images by the paper's eq. 3 (sign codes compared
    /// with popcounts over the query's K most active channels of layer t+1, on the GPU).
    /// Exits with status 2 if some query images could not be read.
    Search(cli::retrieval::SearchArgs),
    /// Evaluate retrieval on an index against ground truth: mAP (Oxford's AP) and recall@1.
    Eval(cli::retrieval::EvalArgs),
    /// Search an index from a browser (a page to drop an image on) or over HTTP (a JSON API),
    /// with one network loaded for every request; listens on 127.0.0.1:8000 by default.
    Serve(cli::serve::ServeArgs),
    /// Train a linear classifier (one-vs-rest SVMs or logistic regression, C chosen by
    /// cross-validation) on labelled features (`extract --labels`).
    TrainClassifier(cli::classify::TrainArgs),
    /// Train the paper's added 1x1 convolution (the AConv layer) on fc6's dense map of
    /// labelled images, through max-pooling and a softmax with the cross-entropy loss.
    TrainAconv(cli::aconv::Args),
    /// Predict the class of every image of an extraction with a trained classifier.
    Classify(cli::classify::ClassifyArgs),
    /// Accuracy, mean per-class accuracy and the confusion matrix of a classifier on
    /// labelled features.
    Evaluate(cli::classify::EvaluateArgs),
    /// Check every GPU kernel this adapter would run against the CPU reference, under the
    /// bounds the tests use: each convolution tile in f32 and f16 storage (with a residual
    /// shortcut too), pooling, normalisation, quantisation, scoring and whole VGG16 and
    /// ResNet-50 passes. Prints a table; exits with status 1 if any check fails.
    Selftest(cli::selftest::Args),
    /// Concatenate an output directory's shards into one .npy file.
    ExportNpy {
        /// Output directory of `extract`.
        dir: PathBuf,
        /// The .npy file to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Only the part with this shard-name prefix of a `--shard I/N` run, e.g. part0of4-
        /// [default: every part, in part order].
        #[arg(long)]
        prefix: Option<String>,
    },
}

/// Exit status of a command line crosspool does not accept (a bad flag or value), distinct
/// from 1 (the run stopped on an error) and 2 (it finished, but some inputs failed).
/// 64 is EX_USAGE of BSD's sysexits.h.
const EXIT_USAGE: u8 = 64;

fn main() -> std::process::ExitCode {
    exit_quietly_on_closed_pipe();
    crosspool::input::keep_decode_buffers();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                std::process::ExitCode::from(EXIT_USAGE)
            } else {
                // --help and --version
                std::process::ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, without a backtrace.
            eprintln!("crosspool: error: {e:#}");
            // A setting no run can use, found before any work, is a usage error.
            let too_large = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(crosspool::Error::TooLarge(_))));
            if too_large {
                std::process::ExitCode::from(EXIT_USAGE)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    // The variables the flags do not cover come from the library's reading of them.
    let env = GpuOptions::from_env()?;
    let opts = GpuOptions {
        backend: cli.backend,
        adapter: cli.adapter,
        unchecked_shaders: cli.unchecked_shaders || env.unchecked_shaders,
        autotune: cli.autotune,
        autotune_cache: cli.autotune_cache,
        ..env
    };
    match cli.command {
        Command::Info { require_gpu, list } => cli::engine::info(&opts, require_gpu, list)?,
        Command::ModelInfo {
            weights,
            model,
            size,
        } => model_info(&weights, model, size)?,
        Command::FitPca(args) => cli::fit_pca::run(&opts, args)?,
        Command::Extract(args) => {
            if cli::extract::run(&opts, args)? > 0 {
                return Ok(std::process::ExitCode::from(2));
            }
        }
        Command::Bench(args) => cli::bench::run(&opts, args)?,
        Command::TrainClassifier(args) => cli::classify::run_train(args)?,
        Command::TrainAconv(args) => cli::aconv::run(&opts, args)?,
        Command::Classify(args) => {
            if cli::classify::run_classify(&opts, args)? > 0 {
                return Ok(std::process::ExitCode::from(2));
            }
        }
        Command::Evaluate(args) => cli::classify::run_evaluate(args)?,
        Command::Index(args) => {
            if cli::retrieval::run_index(args)? > 0 {
                return Ok(std::process::ExitCode::from(2));
            }
        }
        Command::Search(args) => {
            if cli::retrieval::run_search(&opts, args)? > 0 {
                return Ok(std::process::ExitCode::from(2));
            }
        }
        Command::Eval(args) => cli::retrieval::run_eval(&opts, args)?,
        Command::Serve(args) => cli::serve::run(&opts, args)?,
        Command::Selftest(args) => {
            if !cli::selftest::run(&opts, args)? {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::ExportNpy { dir, out, prefix } => {
            let (rows, shape) =
                crosspool::store::writer::export_npy(&dir, prefix.as_deref(), &out)?;
            println!(
                "wrote {}: {rows} x {} x {}",
                out.display(),
                shape[0],
                shape[1]
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn model_info(path: &std::path::Path, model: Option<Arch>, size: usize) -> anyhow::Result<()> {
    let trunk = ModelWeights::load(path, model, None)?;
    // The classifier layers too, when the file has them.
    let last = trunk
        .arch
        .layers()
        .last()
        .map(|l| l.name.clone())
        .unwrap_or_default();
    let w = ModelWeights::load(path, Some(trunk.arch), Some(&last)).unwrap_or(trunk);
    println!("weights:    {}", path.display());
    println!("network:    {}", w.arch);
    let p = w.preprocess;
    println!(
        "preprocess: {:?}, pixel * {} - mean {:?}, / std {:?}{}",
        p.order,
        p.scale,
        p.mean,
        p.std,
        if w.preprocess_assumed {
            " (no metadata: torchvision's assumed)"
        } else {
            ""
        }
    );
    let layers = w.arch.layers();
    let folded = layers
        .iter()
        .filter(|l| {
            matches!(
                &l.kind,
                LayerKind::Conv {
                    batch_norm: Some(_),
                    ..
                }
            )
        })
        .filter(|l| w.layer(&l.name).is_some())
        .count();
    if folded > 0 {
        println!(
            "batch norm: folded into the {folded} convolutions before it on load (in f64, eps {})",
            crosspool::store::weights_file::BATCH_NORM_EPS
        );
    }
    println!("layers at {size}x{size} input (activations after ReLU where the layer has one):");
    let width = layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let input = Shape4::new(1, size, size, 3);
    for (i, layer) in layers.iter().enumerate() {
        let loaded = w.layer(&layer.name).is_some();
        match w.arch.output_shapes(input, i) {
            Ok(shapes) => {
                let s = shapes[i];
                let mut note = String::new();
                if let LayerKind::Conv { spec, .. } = &layer.kind {
                    if let Some(j) = layer.shortcut {
                        note += &format!("  (+ {})", layers[j].name);
                    }
                    if !spec.relu {
                        note += "  (no ReLU)";
                    }
                    if !loaded {
                        note += "  (weights not in file)";
                    }
                }
                println!(
                    "  {:<width$} {:>4} x {:<4} x {:>4}{note}",
                    layer.name, s.h, s.w, s.c
                );
            }
            Err(e) => {
                println!("  {:<width$} not computable at this size: {e}", layer.name);
                break;
            }
        }
    }
    Ok(())
}

/// `crosspool info | head` closes the pipe early: end as other Unix tools do (SIGPIPE's
/// default action) instead of panicking in `println!`, which Rust's runtime makes of the
/// ignored signal.
fn exit_quietly_on_closed_pipe() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restores the default action of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
