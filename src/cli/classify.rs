//! `crosspool train-classifier`, `classify` and `evaluate`: linear classifiers on the features
//! of an extraction whose manifests carry labels (`extract --labels`).

use super::engine::Device;
use anyhow::Context;
use crosspool::classifier::cv::{select_c, DEFAULT_GRID};
use crosspool::classifier::data::FeatureSet;
use crosspool::classifier::metrics::Confusion;
use crosspool::classifier::model::Classifier;
use crosspool::classifier::{train, Examples, Kind, Tolerance};
use crosspool::gpu::GpuOptions;
use crosspool::store::shards::settings_file;
use crosspool::store::ExtractSettings;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `train-classifier`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Output directory of `extract --labels ...` (every part of it is read).
    features: PathBuf,
    /// One-vs-rest linear SVMs (squared hinge, as LIBLINEAR) or multinomial logistic
    /// regression.
    #[arg(long, value_parser = super::choice::choice::<Kind>(), default_value_t = Kind::Svm)]
    model: Kind,
    /// Regularisation constant; without it, C is chosen from --c-grid by cross-validation.
    #[arg(long, value_parser = super::positive)]
    c: Option<f64>,
    /// The Cs to cross-validate [default: 1e-6,1e-5,...,1e4].
    #[arg(long, value_parser = super::positive, value_delimiter = ',')]
    c_grid: Vec<f64>,
    /// Folds of the stratified cross-validation (fewer if a class has fewer examples).
    #[arg(long, value_parser = super::at_least_two, default_value_t = 5)]
    folds: usize,
    /// The classifier file to write (safetensors).
    #[arg(long, short)]
    out: PathBuf,
}

/// Arguments of `evaluate`.
#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// The classifier (from `train-classifier`).
    #[arg(long)]
    classifier: PathBuf,
    /// Output directory of `extract --labels ...` with the classifier's settings: the test set.
    features: PathBuf,
    /// Write the confusion matrix as a PNG here (rows: true class, columns: predicted, in
    /// the classifier's class order; blue the right answers, red the confusions).
    #[arg(long)]
    confusion: Option<PathBuf>,
    /// Print the results as JSON on standard output.
    #[arg(long)]
    json: bool,
}

/// Arguments of `classify`.
#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// The classifier (from `train-classifier`).
    #[arg(long)]
    classifier: PathBuf,
    /// An output directory of `extract` with the classifier's settings, or images
    /// (files, directories, list files, as `extract` takes them), which are then extracted
    /// with the classifier's recorded settings (its weights and PCA files must still be
    /// where they were, unchanged).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Write the predictions here as JSON lines (`{"path", "class", "score"}`, or
    /// `{"path", "error"}` for an image that could not be read) [default: standard output].
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Where the network runs when images are given.
    #[arg(long, value_parser = super::choice::choice::<Device>(), default_value_t = Device::Auto)]
    device: Device,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Class indices for `labels`, with the sorted class names.
pub(super) fn class_indices(labels: &[&str]) -> (Vec<String>, Vec<usize>) {
    let classes: Vec<String> = labels
        .iter()
        .map(|s| s.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let y = labels
        .iter()
        .map(|l| {
            classes
                .iter()
                .position(|c| c == l)
                .expect("from the labels")
        })
        .collect();
    (classes, y)
}

/// Refuses a feature set without one image's features (all failed in extraction): there is
/// nothing to `purpose`.
fn ensure_some(set: &FeatureSet, from: &std::path::Path, purpose: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !set.is_empty(),
        "no image of {} has a feature ({} failed in extraction): there is nothing to {purpose}",
        from.display(),
        set.failed.len()
    );
    Ok(())
}

/// Runs `train-classifier`.
pub fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    super::output_folder_for(&a.out)?;
    let set = FeatureSet::read(&a.features)?;
    ensure_some(&set, &a.features, "train on")?;
    let labels = set.require_labels()?;
    let (classes, y) = class_indices(&labels);
    anyhow::ensure!(
        classes.len() >= 2,
        "{} holds one class only ('{}'): a classifier needs at least two",
        a.features.display(),
        classes.join("")
    );
    eprintln!(
        "train-classifier: {} images of {} classes ({}), {} values each, {} failed in extraction (left out)",
        set.len(),
        classes.len(),
        classes.join(", "),
        set.d,
        set.failed.len()
    );
    let ex = Examples {
        x: &set.x,
        d: set.d,
        y: &y,
        classes: classes.len(),
    };
    let tol = Tolerance::default();
    let (c, cv) = match a.c {
        Some(c) => (c, Vec::new()),
        None => {
            let grid = if a.c_grid.is_empty() {
                DEFAULT_GRID.to_vec()
            } else {
                a.c_grid.clone()
            };
            let (c, scores) = select_c(&ex, a.model, &grid, a.folds, tol)?;
            for s in &scores {
                eprintln!(
                    "train-classifier: C {:<8} cross-validated accuracy {:.2}%",
                    s.c,
                    100.0 * s.accuracy
                );
            }
            let (lo, hi) = grid
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), &g| (l.min(g), h.max(g)));
            if grid.len() > 1 && (c == lo || c == hi) {
                eprintln!(
                    "train-classifier: warning: C {c} is at the edge of the grid ({lo} .. {hi}); a wider --c-grid may find a better one"
                );
            }
            (c, scores)
        }
    };
    let model = train(&ex, a.model, c, tol)?;
    let right = (0..set.len())
        .filter(|&i| model.predict(set.row(i)) == y[i])
        .count();
    let clf = Classifier {
        model,
        classes,
        cv,
        examples: set.len(),
        settings: set.settings.clone(),
    };
    clf.save(&a.out)?;
    println!(
        "wrote {}: {} with C {c}, training accuracy {:.2}%",
        a.out.display(),
        crosspool::choice::value_name(&a.model),
        100.0 * right as f64 / set.len() as f64
    );
    Ok(())
}

/// The features of `dir`, checked to be what `clf` was trained on.
fn features_for(clf: &Classifier, dir: &Path) -> anyhow::Result<FeatureSet> {
    let set = FeatureSet::read(dir)?;
    let differences = feature_differences(&clf.settings, &set.settings);
    anyhow::ensure!(
        differences.is_empty(),
        "the features in {} were extracted otherwise than the classifier's ({}); extract them with its settings",
        dir.display(),
        differences.join("; ")
    );
    Ok(set)
}

/// What makes the features a classifier was trained on (`a`) and those given (`b`) differ,
/// each side named, leaving out where the weights file lay (its
/// content fingerprint is compared) and how the values were stored (f32 or f16).
fn feature_differences(a: &ExtractSettings, b: &ExtractSettings) -> Vec<String> {
    let same_weights =
        a.weights_fingerprint.is_some() && a.weights_fingerprint == b.weights_fingerprint;
    a.compared_with(b, "the classifier's", "the features'")
        .into_iter()
        .filter(|d| !(d.starts_with("format:") || (same_weights && d.starts_with("weights:"))))
        .collect()
}

/// Runs `evaluate`.
pub fn run_evaluate(a: EvaluateArgs) -> anyhow::Result<()> {
    let clf = Classifier::load(&a.classifier)?;
    let set = features_for(&clf, &a.features)?;
    ensure_some(&set, &a.features, "evaluate")?;
    let labels = set.require_labels()?;
    let truth: Vec<usize> = labels
        .iter()
        .zip(&set.paths)
        .map(|(l, p)| {
            clf.class_index(l)
                .with_context(|| format!("the label of {p}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let pairs: Vec<(usize, usize)> = (0..set.len())
        .map(|i| (truth[i], clf.model.predict(set.row(i))))
        .collect();
    let cm = Confusion::new(clf.classes.len(), pairs);
    if let Some(png) = &a.confusion {
        cm.save_png(png)?;
    }
    let per_class = cm.per_class();
    if a.json {
        let per: serde_json::Map<String, serde_json::Value> = clf
            .classes
            .iter()
            .zip(&per_class)
            .map(|(c, v)| (c.clone(), serde_json::json!(v)))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "images": cm.total(),
                "accuracy": cm.accuracy(),
                "mean_per_class_accuracy": cm.mean_per_class(),
                "per_class_accuracy": per,
                "confusion": cm.counts,
                "classes": clf.classes,
                "failed_in_extraction": set.failed.len(),
            })
        );
        return Ok(());
    }
    println!(
        "{} images: accuracy {:.2}%, mean per-class accuracy {:.2}%",
        cm.total(),
        100.0 * cm.accuracy(),
        100.0 * cm.mean_per_class()
    );
    for (c, v) in clf.classes.iter().zip(&per_class) {
        match v {
            Some(v) => println!("  {c:<24} {:.2}%", 100.0 * v),
            None => println!("  {c:<24} (no test images)"),
        }
    }
    if !set.failed.is_empty() {
        println!(
            "{} images failed in extraction and are not counted",
            set.failed.len()
        );
    }
    Ok(())
}

/// Whether `dir` is an output directory of `extract` (it holds a run's settings, of the whole
/// run or of a part).
fn is_feature_dir(dir: &Path) -> bool {
    dir.is_dir()
        && std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_str().is_some_and(|n| {
                    n == settings_file("") || (n.starts_with("extract-") && n.ends_with(".json"))
                })
            })
        })
}

/// A directory removed when dropped, and on SIGINT, SIGTERM or SIGHUP: where `classify`
/// extracts the images it is given. Without the signal handler a Ctrl-C or a scheduler's
/// SIGTERM would leave every extracted feature behind in the temporary directory.
struct Scratch(PathBuf);

impl Scratch {
    fn new(dir: PathBuf) -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
                .context("installing the handler that removes classify's scratch directory")?;
            let doomed = dir.clone();
            // The thread outlives the directory on purpose: a signal after the normal removal
            // still ends the process as the default action would.
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    // Extraction may still be writing into it: a few tries.
                    for _ in 0..5 {
                        if std::fs::remove_dir_all(&doomed).is_ok() || !doomed.exists() {
                            break;
                        }
                    }
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                    std::process::exit(128 + sig);
                }
            });
        }
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `classify`; returns the number of images that could not be classified.
pub fn run_classify(opts: &GpuOptions, a: ClassifyArgs) -> anyhow::Result<usize> {
    let clf = Classifier::load(&a.classifier)?;
    let (set, _scratch) = match a.inputs.as_slice() {
        [dir] if is_feature_dir(dir) => (features_for(&clf, dir)?, None),
        _ => {
            let scratch = Scratch::new(std::env::temp_dir().join(format!(
                "crosspool-classify-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            )))?;
            let args = super::extract::Args::like(
                &clf.settings,
                a.inputs.clone(),
                scratch.0.clone(),
                a.device,
                a.quiet,
            );
            super::extract::run(opts, args).context("extracting the images to classify")?;
            (features_for(&clf, &scratch.0)?, Some(scratch))
        }
    };
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for i in 0..set.len() {
        let scores = clf.model.scores(set.row(i));
        let k = crosspool::classifier::linear::argmax(&scores);
        writeln!(
            out,
            "{}",
            serde_json::json!({"path": set.paths[i], "class": clf.classes[k], "score": scores[k]})
        )?;
    }
    for (path, reason) in &set.failed {
        writeln!(
            out,
            "{}",
            serde_json::json!({"path": path, "error": reason})
        )?;
    }
    out.flush()?;
    if !set.failed.is_empty() {
        eprintln!(
            "classify: {} images could not be read and have no prediction (their lines say why)",
            set.failed.len()
        );
    }
    Ok(set.failed.len())
}
