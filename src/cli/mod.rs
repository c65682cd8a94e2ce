//! Subcommands with more than a few lines of their own.

pub mod aconv;
pub mod bench;
pub mod choice;
pub mod classify;
pub mod extract;
pub mod fit_pca;
pub mod retrieval;
pub mod selftest;

/// Parses an `MxN` local window such as `1x1` or `3x3`.
pub fn parse_window(s: &str) -> Result<crosspool::pooling::LocalWindow, String> {
    crosspool::pooling::LocalWindow::parse(s).map_err(|e| e.to_string())
}

pub mod engine;

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
