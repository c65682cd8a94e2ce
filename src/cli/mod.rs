//! Subcommands with more than a few lines of their own.

pub mod aconv;
pub mod bench;
pub mod classify;
pub mod extract;
pub mod fit_pca;
pub mod retrieval;

/// Parses an `MxN` local window such as `1x1` or `3x3`.
pub fn parse_window(s: &str) -> Result<crosspool::pooling::LocalWindow, String> {
    crosspool::pooling::LocalWindow::parse(s).map_err(|e| e.to_string())
}

pub mod engine;
