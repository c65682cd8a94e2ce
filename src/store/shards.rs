//! Shard file names and manifests.
//!
//! An output directory holds, for each part (`--shard I/N`, prefix `partIofN-`, or none):
//! - `extract.json` / `extract-partIofN-.json`: the run's [`super::ExtractSettings`];
//! - `shard-{prefix}{k:05}.safetensors`: the features of up to `--shard-rows` images;
//! - `shard-{prefix}{k:05}.jsonl`: its manifest, one [`ManifestLine`] per image, in input
//!   order. It is written last, so a shard counts as finished exactly when it exists.

use crate::error::{Error, Result};
use crate::input::{image_identity, ImageId, ImageSource};
use std::path::{Path, PathBuf};

/// The file-name prefix of part `i` of `n` of a job array.
pub fn part_prefix(i: usize, n: usize) -> String {
    format!("part{i}of{n}-")
}

/// `shard-{prefix}{k:05}.{ext}`.
pub fn shard_file(prefix: &str, k: usize, ext: &str) -> String {
    format!("shard-{prefix}{k:05}.{ext}")
}

/// The settings file of the part with `prefix`.
pub fn settings_file(prefix: &str) -> String {
    if prefix.is_empty() {
        "extract.json".into()
    } else {
        format!("extract-{prefix}.json")
    }
}

/// The settings files of every part in `dir` (`extract.json`, `extract-PREFIX.json`).
pub fn part_settings_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let e = e.map_err(Error::io(dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let part = name
            .strip_prefix("extract-")
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(parse_part_prefix);
        if name == "extract.json" || part.is_some() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The lock file of the part with `prefix`: held (an OS file lock) by the one `extract` run
/// writing that part, released when it ends or dies.
pub fn lock_file(prefix: &str) -> String {
    if prefix.is_empty() {
        "extract.lock".into()
    } else {
        format!("extract-{prefix}.lock")
    }
}

/// Holds the lock on one part of an output directory while it lives.
#[derive(Debug)]
pub struct PartLock {
    _file: std::fs::File,
}

/// Takes the lock on the part with `prefix` in `dir`, or says who holds it. The lock is the
/// operating system's (flock), so a run killed with -9 leaves no stale lock behind; where the
/// file system has no locks (some network file systems) the run goes on without one.
pub fn lock_part(dir: &Path, prefix: &str) -> Result<Option<PartLock>> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(lock_file(prefix));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Error::write(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::Config(format!(
                "another crosspool extract ({}) is writing {}{} now; wait for it to finish, or write to another --out",
                holder.trim(),
                dir.display(),
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!(" (part {prefix})")
                }
            )));
        }
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            return Ok(None);
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::write(&path)(e)),
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let holder = format!(
        "process {} started at unix time {started}",
        std::process::id()
    );
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(holder.as_bytes()))
        .map_err(Error::write(&path))?;
    Ok(Some(PartLock { _file: file }))
}

/// What became of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It has a feature row.
    Ok,
    /// It has none; the line says why.
    Failed,
}

/// The text a manifest records for `path` and, when the path is not valid UTF-8, its exact
/// bytes in hex. The text is then the path with each byte that is not UTF-8 written `\xNN`,
/// readable and distinct for distinct paths; the bytes are what identifies the file.
pub fn path_text(path: &Path) -> (String, Option<String>) {
    if let Some(s) = path.to_str() {
        return (s.to_string(), None);
    }
    let bytes = path.as_os_str().as_encoded_bytes();
    let mut text = String::new();
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for b in chunk.invalid() {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (text, Some(hex))
}

/// The path a manifest line names, exactly as it was given.
fn path_from_line(text: &str, hex: Option<&str>) -> Option<PathBuf> {
    let Some(hex) = hex else {
        return Some(PathBuf::from(text));
    };
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(std::ffi::OsString::from_vec(bytes?)))
    }
    #[cfg(not(unix))]
    {
        // Paths elsewhere are Unicode; bytes only come from Unix.
        String::from_utf8(bytes?).ok().map(PathBuf::from)
    }
}

/// One line of a shard manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestLine {
    /// The image, as it was given (see [`path_text`] for paths that are not UTF-8).
    pub path: String,
    /// The path's exact bytes in hex, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<String>,
    /// The image's identity (a file's, or a tar member's tar's: absolute, links resolved) as
    /// the run that wrote the line saw it, so that a resume from another working directory
    /// knows the image; absent in manifests written before it was recorded, and for images
    /// handed over in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The identity's exact bytes in hex, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_bytes: Option<String>,
    /// Whether it has a feature.
    pub status: Status,
    /// Ok: the shard file holding its feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Ok: its row in that shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// Failed: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The image's class, when the run was given labels (`extract --labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A tar shard's image: the member's name (`path` is then the tar's). Absent, with an
    /// `offset`, for a part of the tar that could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// A tar member: its WebDataset sample key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A tar member: the byte offset of its header in the tar (of the unreadable part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// A tar member: the other members of its sample, by field (`json`, `txt`, `cls`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecars: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ManifestLine {
    /// The line of `source`, with the status and nothing else yet.
    fn of(source: &ImageSource, status: Status) -> Self {
        let named;
        let (path, member, identity) = match source {
            ImageSource::File(p) => (p.as_path(), None, Some(image_identity(p))),
            ImageSource::Member(m) => (&*m.tar, Some(m), Some(m.tar_identity.to_path_buf())),
            ImageSource::Pixels(_) | ImageSource::Encoded(_) => {
                named = source.name();
                (named.as_path(), None, None)
            }
        };
        let (path, path_bytes) = path_text(path);
        let (identity, identity_bytes) = match identity.as_deref().map(path_text) {
            Some((text, bytes)) => (Some(text), bytes),
            None => (None, None),
        };
        ManifestLine {
            path,
            path_bytes,
            identity,
            identity_bytes,
            status,
            shard: None,
            row: None,
            reason: None,
            label: None,
            member: member.and_then(|m| m.member.clone()),
            key: member.and_then(|m| m.key.clone()),
            offset: member.map(|m| m.offset),
            sidecars: member
                .filter(|m| !m.sidecars.is_empty())
                .map(|m| (*m.sidecars).clone()),
        }
    }

    /// An image with a feature at `row` of `shard`.
    pub fn ok(source: &ImageSource, shard: &str, row: usize) -> Self {
        ManifestLine {
            shard: Some(shard.into()),
            row: Some(row),
            ..Self::of(source, Status::Ok)
        }
    }

    /// An image without a feature, and why.
    pub fn failed(source: &ImageSource, reason: String) -> Self {
        ManifestLine {
            reason: Some(reason),
            ..Self::of(source, Status::Failed)
        }
    }

    /// How the line names its image: the path as recorded, `TAR/MEMBER` for a tar member,
    /// `TAR at byte N` for a part of a tar that could not be read.
    pub fn name(&self) -> String {
        match (&self.member, self.offset) {
            (Some(m), _) => format!("{}/{m}", self.path),
            (None, Some(o)) => format!("{} at byte {o}", self.path),
            (None, None) => self.path.clone(),
        }
    }

    /// The identity of the image the line records (see [`ImageSource::identity`]).
    pub fn identity(&self) -> Result<ImageId> {
        let recorded = match &self.identity {
            Some(text) => Some(
                path_from_line(text, self.identity_bytes.as_deref()).ok_or_else(|| {
                    Error::Config(format!(
                        "manifest line for {}: identity_bytes is not hex",
                        self.path
                    ))
                })?,
            ),
            None => None,
        };
        // Lines written before identities were recorded: resolved from where this runs.
        let path = match recorded {
            Some(p) => p,
            None => image_identity(&self.image_path()?),
        };
        Ok(match self.offset {
            Some(offset) => ImageId::Member {
                tar: path,
                offset,
                member: self.member.clone(),
            },
            None => ImageId::File(path),
        })
    }

    /// The image's path (a tar member's tar), exactly as it was given.
    pub fn image_path(&self) -> Result<PathBuf> {
        path_from_line(&self.path, self.path_bytes.as_deref()).ok_or_else(|| {
            Error::Config(format!(
                "manifest line for {}: path_bytes is not hex",
                self.path
            ))
        })
    }

    /// The row of an image that has a feature.
    pub fn ok_row(&self) -> Option<usize> {
        match self.status {
            Status::Ok => self.row,
            Status::Failed => None,
        }
    }
}

/// Reads every line of the manifest at `path`.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestLine>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let line: ManifestLine = serde_json::from_str(l).map_err(|e| {
                Error::Config(format!(
                    "{}:{}: not a manifest line ({e})",
                    path.display(),
                    n + 1
                ))
            })?;
            if line.status == Status::Ok && line.row.is_none() {
                return Err(Error::Config(format!(
                    "{}:{}: an ok line without a row",
                    path.display(),
                    n + 1
                )));
            }
            Ok(line)
        })
        .collect()
}

/// A shard whose manifest exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedShard {
    /// Its part's prefix (`""` or `partIofN-`).
    pub prefix: String,
    /// Its number within the part.
    pub index: usize,
    /// The manifest.
    pub manifest: PathBuf,
    /// The features.
    pub data: PathBuf,
}

/// Splits `shard-{prefix}{k:05}.jsonl` into (prefix, k).
fn parse_manifest_name(name: &str) -> Option<(String, usize)> {
    let rest = name.strip_prefix("shard-")?.strip_suffix(".jsonl")?;
    let digits = rest.len() - rest.chars().rev().take_while(char::is_ascii_digit).count();
    let (prefix, k) = rest.split_at(digits);
    let k = k.parse().ok()?;
    let valid_prefix = prefix.is_empty() || parse_part_prefix(prefix).is_some();
    valid_prefix.then(|| (prefix.to_string(), k))
}

/// `(I, N)` of a part prefix `partIofN-` (see [`part_prefix`]); `None` for anything else,
/// the unsplit run's `""` included.
pub fn parse_part_prefix(prefix: &str) -> Option<(usize, usize)> {
    let (i, n) = prefix
        .strip_prefix("part")?
        .strip_suffix('-')?
        .split_once("of")?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

/// The finished shards in `dir`, of the part with `prefix` or (`None`) of every part,
/// sorted by part and number. A directory that does not exist holds none.
pub fn finished_shards(dir: &Path, prefix: Option<&str>) -> Result<Vec<FinishedShard>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let manifest = e.map_err(Error::io(dir))?.path();
        let Some((p, index)) = manifest
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_manifest_name)
        else {
            continue;
        };
        if prefix.is_some_and(|want| want != p) {
            continue;
        }
        out.push(FinishedShard {
            data: dir.join(shard_file(&p, index, "safetensors")),
            prefix: p,
            index,
            manifest,
        });
    }
    out.sort_by(|a, b| (&a.prefix, a.index).cmp(&(&b.prefix, b.index)));
    Ok(out)
}

/// An error about the feature shard at `path`.
pub fn bad_shard(path: &Path, message: impl Into<String>) -> Error {
    Error::BadFile {
        path: path.display().to_string(),
        what: "feature shard",
        message: message.into(),
    }
}

/// One finished shard, read: its file, the settings in its metadata, its manifest and its
/// tensors.
pub struct ShardContents<'a> {
    /// The `.safetensors` file.
    pub path: &'a Path,
    /// The settings it was extracted with.
    pub settings: super::ExtractSettings,
    /// Its manifest, one line per image, in input order.
    pub lines: Vec<ManifestLine>,
    /// Its tensors.
    pub tensors: super::tensor_file::TensorFile<'a>,
}

/// Where one finished shard's tensors lie in its file, for memory-mapping (Python's
/// `read_shards`), and its manifest.
pub struct ShardLayout {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// Per tensor, by name: element type, shape and byte offset in the file.
    pub tensors: Vec<(String, super::tensor_file::Element, Vec<usize>, usize)>,
    /// Its manifest, one line per image, in input order.
    pub lines: Vec<ManifestLine>,
}

/// The layout of every finished shard of `dir` (all parts, in order), reading only headers
/// and manifests. No finished shard, an unreadable one, or parts extracted with different
/// settings are errors.
pub fn shard_layouts(dir: &Path) -> Result<Vec<ShardLayout>> {
    let shards = finished_shards(dir, None)?;
    if shards.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no finished shards (run crosspool extract --out {} first)",
            dir.display(),
            dir.display()
        )));
    }
    let mut first = None;
    let mut out = Vec::new();
    for shard in shards {
        let path = shard.data;
        let file = std::fs::File::open(&path).map_err(Error::io(&path))?;
        // SAFETY: read only while the file is open here; shards are written under a
        // temporary name and renamed, never changed in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(&path))?;
        let st = super::tensor_file::TensorFile::parse(&map).map_err(|e| bad_shard(&path, e))?;
        super::ExtractSettings::of_shard(&st.meta, &path)?.check_one_set(&path, &mut first)?;
        let mut tensors: Vec<_> = st
            .tensors()
            .map(|(name, t)| (name.to_string(), t.element, t.shape.clone(), t.offset))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(ShardLayout {
            lines: read_manifest(&shard.manifest)?,
            path,
            tensors,
        });
    }
    Ok(out)
}

/// Reads every finished shard of `dir` (all parts, in order) and hands each to `f`. A
/// directory without finished shards, an unreadable shard, or shards extracted with
/// different settings are errors. Returns the settings.
pub fn for_each_shard(
    dir: &Path,
    mut f: impl FnMut(ShardContents<'_>) -> Result<()>,
) -> Result<super::ExtractSettings> {
    let shards = finished_shards(dir, None)?;
    let mut first: Option<(super::ExtractSettings, PathBuf)> = None;
    for shard in &shards {
        let path = &shard.data;
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        let tensors =
            super::tensor_file::TensorFile::parse(&bytes).map_err(|e| bad_shard(path, e))?;
        let settings = super::ExtractSettings::of_shard(&tensors.meta, path)?;
        settings.check_one_set(path, &mut first)?;
        f(ShardContents {
            path,
            settings,
            lines: read_manifest(&shard.manifest)?,
            tensors,
        })?;
    }
    first.map(|(s, _)| s).ok_or_else(|| {
        Error::Config(format!(
            "{} holds no finished feature shards (run crosspool extract --out {} first)",
            dir.display(),
            dir.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn paths_that_are_not_utf8_are_kept_exactly() {
        use std::os::unix::ffi::OsStrExt;
        let a = Path::new(std::ffi::OsStr::from_bytes(b"d/caf\xe8.jpg"));
        let b = Path::new(std::ffi::OsStr::from_bytes(b"d/caf\xe9.jpg"));
        let (la, lb) = (
            ManifestLine::ok(&a.into(), "s", 0),
            ManifestLine::ok(&b.into(), "s", 1),
        );
        assert_eq!(la.path, "d/caf\\xe8.jpg");
        assert_ne!(la.path, lb.path);
        for (line, want) in [(la, a), (lb, b)] {
            let text = serde_json::to_string(&line).unwrap();
            let back: ManifestLine = serde_json::from_str(&text).unwrap();
            assert_eq!(back.image_path().unwrap(), want);
        }
        let plain = ManifestLine::ok(&Path::new("d/café.jpg").into(), "s", 0);
        assert_eq!(plain.path_bytes, None);
        assert_eq!(plain.image_path().unwrap(), Path::new("d/café.jpg"));
    }

    #[test]
    fn names_round_trip() {
        for prefix in ["", &part_prefix(3, 8)] {
            let name = shard_file(prefix, 12, "jsonl");
            assert_eq!(parse_manifest_name(&name), Some((prefix.to_string(), 12)));
        }
        assert_eq!(parse_manifest_name("shard-00001.safetensors"), None);
        assert_eq!(parse_manifest_name("shard-x00001.jsonl"), None);
        assert_eq!(parse_manifest_name("shard-.jsonl"), None);
        assert_eq!(parse_part_prefix("part3of8-"), Some((3, 8)));
        assert_eq!(parse_part_prefix(""), None);
        assert_eq!(parse_part_prefix("part3of8"), None);
        assert_eq!(settings_file(""), "extract.json");
        assert_eq!(settings_file("part1of2-"), "extract-part1of2-.json");
    }

    #[test]
    fn manifest_lines_read_what_version_one_wrote() {
        let old = r#"{"path":"a.jpg","row":0,"shard":"shard-00000.safetensors","status":"ok"}"#;
        let line: ManifestLine = serde_json::from_str(old).unwrap();
        // Lines of then had no identity: it is resolved from where the reader runs.
        let now = ManifestLine::ok(&Path::new("a.jpg").into(), "shard-00000.safetensors", 0);
        assert_eq!(
            line,
            ManifestLine {
                identity: None,
                ..now.clone()
            }
        );
        assert_eq!(line.identity().unwrap(), now.identity().unwrap());
        let old = r#"{"path":"b.jpg","reason":"empty file","status":"failed"}"#;
        let line: ManifestLine = serde_json::from_str(old).unwrap();
        assert_eq!(line.ok_row(), None);
        assert_eq!(line.reason.as_deref(), Some("empty file"));
    }
}
