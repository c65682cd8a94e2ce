//! Subcommands with more than a few lines of their own.

pub mod bench;
pub mod extract;
pub mod fit_pca;
pub mod retrieval;

/// Parses an `MxN` local window such as `1x1` or `3x3`.
pub fn parse_window(s: &str) -> Result<crosspool::pooling::LocalWindow, String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{s}' is not of the form MxN, e.g. 3x3"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{s}' is not of the form MxN, e.g. 3x3"))
    };
    crosspool::pooling::LocalWindow::new(n(h)?, n(w)?).map_err(|e| e.to_string())
}
