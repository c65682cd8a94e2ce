//! Subcommands with more than a few lines of their own.

pub mod aconv;
pub mod bench;
pub mod choice;
pub mod classify;
pub mod extract;
pub mod fit_pca;
pub mod retrieval;
pub mod selftest;

/// Makes the folder an output file goes in, before any work (as `index`, `classify` and
/// `evaluate` make theirs): a missing folder must not fail a run at its end.
pub fn output_folder_for(file: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the folder of {}", file.display())),
        None => Ok(()),
    }
}

/// A whole number of at least 1 (batches, epochs, filters, rows per shard).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    whole_at_least(s, 1)
}

/// A whole number of at least 2 (cross-validation folds).
pub fn at_least_two(s: &str) -> Result<usize, String> {
    whole_at_least(s, 2)
}

/// `s` as a whole number of at least `min`.
fn whole_at_least(s: &str, min: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("'{s}' is not a whole number of at least {min}")),
    }
}

/// A finite number above 0 (a regularisation constant, a learning rate).
pub fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a finite number above 0")),
    }
}

/// A finite number of at least 0 (a weight decay).
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a finite number of at least 0")),
    }
}

/// A number from 0 up to, but not including, 1 (a momentum).
pub fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "'{s}' is not a number from 0 up to (not including) 1"
        )),
    }
}

/// Parses an `MxN` local window such as `1x1` or `3x3`.
pub fn parse_window(s: &str) -> Result<crosspool::pooling::LocalWindow, String> {
    crosspool::pooling::LocalWindow::parse(s).map_err(|e| e.to_string())
}

pub mod engine;

/// The network's weights, as `extract`, `fit-pca` and `train-aconv` name them.
#[derive(clap::Args)]
pub struct NetworkArgs {
    /// Safetensors weights file (train-aconv needs the fully connected layers in it).
    #[arg(long)]
    pub weights: std::path::PathBuf,
    /// Architecture, if the file's metadata does not name it.
    #[arg(long, value_parser = choice::choice::<crosspool::model::Arch>())]
    pub model: Option<crosspool::model::Arch>,
}

/// Decodes and preprocesses `images` on all cores for a batch: the values of those read, in
/// order, and their indices in `images`. One that cannot be read is reported as
/// `"{command}: NAME: REASON (left out)"` and left out.
pub fn decode_batch(
    images: &[crosspool::input::ImageSource],
    size: u32,
    pre: &crosspool::model::Preprocess,
    decode: crosspool::input::DecodeOptions,
    command: &str,
) -> (Vec<f32>, Vec<usize>) {
    use rayon::prelude::*;
    let prepared: Vec<_> = images
        .par_iter()
        .map(|p| crosspool::input::prepare_source(p, size, pre, decode))
        .collect();
    let (mut x, mut read) = (Vec::new(), Vec::new());
    for (j, (p, r)) in images.iter().zip(prepared).enumerate() {
        match r {
            Ok(v) => {
                x.extend(v);
                read.push(j);
            }
            Err(e) => eprintln!(
                "{command}: {}: {} (left out)",
                p.name().display(),
                crosspool::input::failure_reason(&e)
            ),
        }
    }
    (x, read)
}
