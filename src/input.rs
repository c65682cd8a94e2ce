//! Reading images into network input.
//!
//! Resize policy: the whole image is resized to `size` x `size` (aspect ratio not kept, no
//! crop), as the paper does before extracting features, so nothing at the borders is lost.

use crate::error::{Error, Result};
use crate::model::Preprocess;
use std::path::Path;

/// Decodes `path` (any format the `image` crate reads), converts it to 8-bit RGB and resizes
/// it to `size` x `size` with a triangle (bilinear) filter.
pub fn load_rgb_resized(path: &Path, size: u32) -> Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?
        .with_guessed_format()
        .map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?
        .decode()
        .map_err(|e| Error::Image {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    let rgb = img.to_rgb8();
    Ok(image::imageops::resize(&rgb, size, size, image::imageops::FilterType::Triangle).into_raw())
}

/// Loads, resizes and preprocesses `paths` into one NHWC batch.
pub fn load_batch(paths: &[&Path], size: u32, pre: &Preprocess) -> Result<Vec<f32>> {
    let mut batch = Vec::with_capacity(paths.len() * (size * size * 3) as usize);
    let mut one = Vec::new();
    for p in paths {
        pre.apply(&load_rgb_resized(p, size)?, &mut one);
        batch.extend_from_slice(&one);
    }
    Ok(batch)
}
