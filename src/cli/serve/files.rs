//! The one directory `serve` reads images from (`--images`): which request paths name a file
//! under it, and the URL path of an index image that lies under it.

use std::path::{Component, Path, PathBuf};

/// Why a request's path names no servable file.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a plain relative path (`..`, absolute, a drive or NUL): never looked up.
    NotRelative,
    /// It resolves (through links) to somewhere outside the root.
    Outside,
    /// Nothing readable there, or not a file.
    Missing,
}

impl Refusal {
    /// The refusal in words, for the client.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::NotRelative => {
                "an image path must be relative to the image root, without '..'"
            }
            Refusal::Outside => "the path leads outside the image root",
            Refusal::Missing => "no such image under the image root",
        }
    }
}

/// The image root, resolved once (absolute, links followed).
#[derive(Clone, Debug)]
pub struct ImageRoot {
    root: PathBuf,
}

impl ImageRoot {
    /// The directory `dir`, which must exist.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let root = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("--images {}: {e}", dir.display()))?;
        anyhow::ensure!(root.is_dir(), "--images {}: not a directory", dir.display());
        Ok(ImageRoot { root })
    }

    /// The file a request names by `relative`: only plain components, and the file it
    /// resolves to (links followed) must lie under the root.
    pub fn resolve(&self, relative: &str) -> Result<PathBuf, Refusal> {
        let rel = Path::new(relative);
        let plain = !relative.is_empty()
            && !relative.contains('\0')
            && !relative.starts_with('/')
            && !relative.starts_with('\\')
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(Refusal::NotRelative);
        }
        let path = self
            .root
            .join(rel)
            .canonicalize()
            .map_err(|_| Refusal::Missing)?;
        if !path.starts_with(&self.root) {
            return Err(Refusal::Outside);
        }
        if !path.is_file() {
            return Err(Refusal::Missing);
        }
        Ok(path)
    }

    /// The path under the root, `/`-separated and percent-encoded for a URL, of the image an
    /// index names `image` (relative paths are taken from the working directory, as
    /// `extract` read them); `None` when it does not lie under the root.
    pub fn url_path(&self, image: &str) -> Option<String> {
        let path = Path::new(image).canonicalize().ok()?;
        let rel = path.strip_prefix(&self.root).ok()?;
        let parts: Option<Vec<String>> = rel
            .components()
            .map(|c| match c {
                Component::Normal(s) => s.to_str().map(percent_encode),
                _ => None,
            })
            .collect();
        let parts = parts?;
        (!parts.is_empty()).then(|| parts.join("/"))
    }
}

/// `segment` with every byte but RFC 3986's unreserved ones percent-encoded.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (PathBuf, ImageRoot) {
        let base =
            std::env::temp_dir().join(format!("crosspool-serve-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root/sub")).unwrap();
        std::fs::write(base.join("root/sub/a b.jpg"), b"x").unwrap();
        std::fs::write(base.join("secret.txt"), b"s").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(base.join("secret.txt"), base.join("root/out.jpg")).unwrap();
            std::os::unix::fs::symlink(base.join("root/sub/a b.jpg"), base.join("root/in.jpg"))
                .unwrap();
        }
        let root = ImageRoot::open(&base.join("root")).unwrap();
        (base, root)
    }

    #[test]
    fn only_files_under_the_root_resolve() {
        let (base, root) = tree();
        assert!(root.resolve("sub/a b.jpg").is_ok());
        for bad in ["../secret.txt", "sub/../../secret.txt", "/etc/passwd", ""] {
            assert_eq!(root.resolve(bad), Err(Refusal::NotRelative), "{bad}");
        }
        assert_eq!(root.resolve("sub"), Err(Refusal::Missing));
        assert_eq!(root.resolve("nope.jpg"), Err(Refusal::Missing));
        #[cfg(unix)]
        {
            assert_eq!(root.resolve("out.jpg"), Err(Refusal::Outside));
            assert!(
                root.resolve("in.jpg").is_ok(),
                "a link that stays inside is served"
            );
        }
        assert_eq!(
            root.url_path(base.join("root/sub/a b.jpg").to_str().unwrap()),
            Some("sub/a%20b.jpg".into())
        );
        assert_eq!(
            root.url_path(base.join("secret.txt").to_str().unwrap()),
            None
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
