//! Which images a command reads: files, directories walked for images, list files, and
//! patterns the shell did not expand.

use super::webdataset;
use crate::error::{Error, Result};
use std::path::Path;

/// File extensions read as images when walking a directory.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp"];

/// Expands `inputs` into image paths: files are taken as given (whatever their extension),
/// directories are walked recursively for regular files with an image extension, in sorted
/// order. Each directory is walked once, however many links lead to it, so a symlink loop
/// neither repeats images nor runs away; FIFOs, sockets and devices are skipped.
pub fn collect_images(inputs: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>> {
    let mut walked = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut walked, &mut out)?;
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

/// A directory's identity, the same by whatever path it is reached.
fn dir_identity(dir: &Path) -> Result<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir).map_err(Error::io(dir))?;
        Ok((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        use std::hash::{Hash, Hasher};
        let canon = std::fs::canonicalize(dir).map_err(Error::io(dir))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        canon.hash(&mut h);
        Ok((0, h.finish()))
    }
}

fn walk(
    dir: &Path,
    walked: &mut std::collections::HashSet<(u64, u64)>,
    out: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    if !walked.insert(dir_identity(dir)?) {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::io(dir))?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        // Tar shards are read as WebDataset shards (see [`expand_sources`]).
        let is_image = webdataset::is_tar(&p)
            || p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()));
        // Follows symlinks. A dangling link named like an image is kept, to be recorded as
        // failed with the reason rather than vanish.
        match std::fs::metadata(&p) {
            Ok(meta) if meta.is_dir() => walk(&p, walked, out)?,
            Ok(meta) if meta.is_file() && is_image => out.push(p),
            Ok(_) => {}
            Err(_) if is_image => out.push(p),
            Err(_) => {}
        }
    }
    Ok(())
}

/// Expands command-line inputs into image paths, in order: image files as given (a file that
/// does not exist stays, to be recorded as failed), directories walked (see
/// [`collect_images`]), list files (`*.txt`, `*.list`: one path per line, `#` comments) and
/// `-` (paths on standard input) read.
pub fn expand_inputs(inputs: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>> {
    use std::io::BufRead;
    use std::path::PathBuf;
    fn read_list(r: &mut dyn BufRead, from: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for line in r.lines() {
            let line = line.map_err(Error::io(from))?;
            let t = line.trim();
            if !t.is_empty() && !t.starts_with('#') {
                out.push(PathBuf::from(t));
            }
        }
        Ok(out)
    }
    let mut paths = Vec::new();
    for p in inputs {
        let is_list = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "txt" || e == "list");
        if p.as_os_str() == "-" {
            paths.extend(read_list(
                &mut std::io::stdin().lock(),
                Path::new("standard input"),
            )?);
        } else if is_list && p.is_file() {
            let f = std::fs::File::open(p).map_err(Error::io(p))?;
            paths.extend(read_list(&mut std::io::BufReader::new(f), p)?);
        } else {
            paths.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        for p in glob_matches(&p)?.unwrap_or_else(|| vec![p]) {
            if p.is_dir() {
                out.extend(collect_images(&[p])?);
            } else {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The paths a pattern that the shell did not expand matches (`'shards/*.tar'`, quoted), in
/// sorted order: `None` if `p` exists or has no `*`, `?` or `[`. A pattern that matches
/// nothing is an error, not an empty input.
fn glob_matches(p: &Path) -> Result<Option<Vec<std::path::PathBuf>>> {
    let Some(text) = p.to_str() else {
        return Ok(None);
    };
    if p.exists() || !text.contains(['*', '?', '[']) {
        return Ok(None);
    }
    let bad = |reason: String| Error::Io {
        path: text.to_string(),
        reason: std::io::Error::new(std::io::ErrorKind::NotFound, reason),
    };
    let paths = glob::glob(text).map_err(|e| bad(format!("not a valid pattern: {e}")))?;
    let mut found = Vec::new();
    for entry in paths {
        found.push(entry.map_err(|e| Error::Io {
            path: e.path().display().to_string(),
            reason: std::io::Error::new(e.error().kind(), e.error().to_string()),
        })?);
    }
    if found.is_empty() {
        return Err(bad("no file matches this pattern".into()));
    }
    found.sort();
    Ok(Some(found))
}
