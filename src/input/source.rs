//! Where an image's bytes come from: a file, or a member of a WebDataset tar shard.

use super::webdataset::{index_tar, is_tar, TarEntry};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What makes two spellings of one file the same image: its canonical path (symlinks and
/// `.`/`..` resolved) when it exists, else the path made absolute.
pub fn image_identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// One image to read.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    /// An image file.
    File(PathBuf),
    /// An image member of a tar shard (or a part of one that could not be read).
    Member(Arc<TarEntry>),
    /// Decoded pixels in memory (an array handed over by the Python package).
    Pixels(Arc<RgbPixels>),
    /// An image file's bytes in memory (handed over by the Python package: what Ray Data's
    /// `read_binary_files` and `read_webdataset` give), decoded as the file would be.
    Encoded(Arc<EncodedImage>),
}

/// An image file's bytes in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedImage {
    /// How messages name it.
    pub name: String,
    /// The file's bytes (JPEG, PNG, ...).
    pub bytes: Vec<u8>,
}

/// An upright 8-bit RGB image in memory, row-major `height x width x 3`.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbPixels {
    /// How messages name it.
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height * width * 3` values.
    pub rgb: Vec<u8>,
}

impl From<PathBuf> for ImageSource {
    fn from(p: PathBuf) -> Self {
        ImageSource::File(p)
    }
}

impl From<&Path> for ImageSource {
    fn from(p: &Path) -> Self {
        ImageSource::File(p.to_path_buf())
    }
}

/// What makes two inputs the same image, for repeats and `--resume`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageId {
    /// A file: its canonical path (see [`image_identity`]).
    File(PathBuf),
    /// A tar member: the tar's identity, its header's offset and its name (a name can repeat
    /// in a tar; an offset cannot).
    Member {
        /// The tar's identity.
        tar: PathBuf,
        /// Byte offset of the member's header.
        offset: u64,
        /// The member's name, `None` for a part that could not be read.
        member: Option<String>,
    },
    /// Pixels in memory, by the name they were given.
    Memory(String),
}

impl ImageSource {
    /// How messages name it: the path, or `TAR/MEMBER`.
    pub fn name(&self) -> PathBuf {
        match self {
            ImageSource::File(p) => p.clone(),
            ImageSource::Member(m) => m.name(),
            ImageSource::Pixels(p) => PathBuf::from(&p.name),
            ImageSource::Encoded(e) => PathBuf::from(&e.name),
        }
    }

    /// The file, if it is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ImageSource::File(p) => Some(p),
            ImageSource::Member(_) | ImageSource::Pixels(_) | ImageSource::Encoded(_) => None,
        }
    }

    /// Its identity.
    pub fn identity(&self) -> ImageId {
        match self {
            ImageSource::File(p) => ImageId::File(image_identity(p)),
            ImageSource::Member(m) => ImageId::Member {
                tar: m.tar_identity.to_path_buf(),
                offset: m.offset,
                member: m.member.clone(),
            },
            ImageSource::Pixels(p) => ImageId::Memory(p.name.clone()),
            ImageSource::Encoded(e) => ImageId::Memory(e.name.clone()),
        }
    }
}

/// The images of `paths` (from [`super::expand_inputs`]): each `.tar` file's members in tar
/// order, each other path as a file. A tar that cannot be opened is one entry that fails
/// with the reason, as a missing file does.
pub fn expand_sources(paths: Vec<PathBuf>) -> Vec<ImageSource> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        if !(is_tar(&p) && p.is_file()) {
            out.push(ImageSource::File(p));
            continue;
        }
        match index_tar(&p) {
            Ok(entries) => out.extend(entries.into_iter().map(|e| ImageSource::Member(e.into()))),
            Err(e) => out.push(ImageSource::Member(Arc::new(TarEntry::unreadable_tar(
                &p,
                super::failure_reason(&e),
            )))),
        }
    }
    out
}
