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
            reason: e,
        })?
        .with_guessed_format()
        .map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e,
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

/// File extensions read as images when walking a directory.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp"];

/// Expands `inputs` into image paths: files are taken as given (whatever their extension),
/// directories are walked recursively for files with an image extension, in sorted order.
pub fn collect_images(inputs: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
        let io = |e| Error::Io {
            path: dir.display().to_string(),
            reason: e,
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<std::result::Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::Io {
                path: p.display().to_string(),
                reason: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or directory",
                ),
            });
        }
    }
    Ok(out)
}
