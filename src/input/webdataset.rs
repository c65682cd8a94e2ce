//! WebDataset tar shards as input: every image member is one image, read from the tar in
//! place (nothing is unpacked to disk), with the other members of its sample (the `.json`,
//! `.txt`, `.cls` beside it) carried along as sidecar fields.
//!
//! A sample is a run of consecutive members with one key, as WebDataset groups them: the
//! member name up to the first dot of its file name (`dir/000017.jpg` and `dir/000017.json`
//! are the key `dir/000017`, fields `jpg` and `json`). A member is an image when the last
//! part of its field is an image extension (`jpg`, `seg.png`).
//!
//! The `tar` crate parses each header (ustar, GNU long names, PAX); the walk is our own, so
//! that damage is accounted for instead of ending the read: a header whose checksum is wrong
//! is recorded and the walk resumes at the next valid header, and a tar cut short names the
//! member it ends in (or says that it ends without its end-of-archive blocks).

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const BLOCK: u64 = 512;
/// Largest sidecar whose content is carried into the manifest; larger ones, and those that
/// are not UTF-8 text, are listed by size only.
pub const MAX_SIDECAR_BYTES: u64 = 1 << 20;
/// Largest GNU long name or PAX header read.
const MAX_EXTENSION_BYTES: u64 = 1 << 20;

/// One entry of a tar's index: an image member, or a part of the tar that could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct TarEntry {
    /// The tar, as it was given.
    pub tar: Arc<Path>,
    /// The tar's identity (see [`super::image_identity`]).
    pub tar_identity: Arc<Path>,
    /// The member's name; `None` for a part of the tar that holds no readable member.
    pub member: Option<String>,
    /// The WebDataset key of the member's sample.
    pub key: Option<String>,
    /// Byte offset of the member's header (of the unreadable part): with the tar, what
    /// identifies the entry, even where a name repeats.
    pub offset: u64,
    /// Byte offset of the member's data.
    pub data_offset: u64,
    /// Bytes of data.
    pub size: u64,
    /// The other members of the sample, by field (`json`: its value; `txt`, `cls`: text).
    pub sidecars: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Why the entry cannot be read, found while indexing (a cut or damaged tar).
    pub problem: Option<String>,
}

impl TarEntry {
    /// How messages and manifests name it: `TAR/MEMBER`, or `TAR at byte N`.
    pub fn name(&self) -> PathBuf {
        let mut s = self.tar.as_os_str().to_owned();
        match &self.member {
            Some(m) => {
                s.push("/");
                s.push(m);
            }
            None => s.push(format!(" at byte {}", self.offset)),
        }
        PathBuf::from(s)
    }

    /// The member's bytes, read from the tar in place, within `cap` bytes.
    pub fn read(&self, cap: u64) -> Result<Vec<u8>> {
        let name = self.name();
        let fail = |reason: String| Error::Image {
            path: name.display().to_string(),
            reason,
        };
        if let Some(p) = &self.problem {
            return Err(fail(p.clone()));
        }
        if self.size == 0 {
            return Err(fail("empty file".into()));
        }
        if self.size > cap {
            return Err(fail(format!(
                "member larger than the {cap}-byte limit (--max-file-bytes)"
            )));
        }
        let file = File::open(&self.tar).map_err(Error::io(&self.tar))?;
        read_at(&file, self.data_offset, self.size as usize)
            .map_err(|e| fail(format!("reading the member from the tar: {e}")))
    }
}

/// `len` bytes at `offset` of `file`.
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf, offset)?;
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut buf)?;
    }
    Ok(buf)
}

/// Whether `path` names a tar shard (by its extension).
pub fn is_tar(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

/// The WebDataset key and field of a member name: the name up to the first dot of its file
/// name, and the rest (`a/b.seg.png` is `a/b` and `seg.png`); `None` without a dot.
pub fn key_and_field(name: &str) -> Option<(&str, &str)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base_start..].find('.')? + base_start;
    (dot > base_start).then(|| (&name[..dot], &name[dot + 1..]))
}

/// Whether a sample field names an image (its last extension is one crosspool reads).
fn is_image_field(field: &str) -> bool {
    let ext = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .to_ascii_lowercase();
    super::IMAGE_EXTENSIONS.contains(&ext.as_str())
}

/// Whether a member's file name ends in an image extension (`a/b.jpg`, and `x/.jpg`, which
/// has no WebDataset key).
fn names_an_image(name: &str) -> bool {
    let base = &name[name.rfind('/').map_or(0, |i| i + 1)..];
    base.rsplit_once('.')
        .is_some_and(|(_, ext)| is_image_field(ext))
}

/// What a member that is not a regular file is, in words; `None` for a directory or a
/// header that carries no member of its own.
fn not_regular(kind: tar::EntryType) -> Option<&'static str> {
    if kind.is_hard_link() {
        Some("hard link")
    } else if kind.is_symlink() {
        Some("symbolic link")
    } else if kind.is_fifo() {
        Some("FIFO")
    } else if kind.is_character_special() || kind.is_block_special() {
        Some("device")
    } else if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_gnu_longlink() {
        None
    } else {
        Some("special member")
    }
}

/// A tar header block's checksum is right: the sum of its bytes with the checksum field
/// read as spaces, as POSIX defines it (some old writers summed signed bytes).
fn checksum_ok(block: &[u8]) -> bool {
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    let text = text.trim_start_matches(' ');
    let Ok(stored) = u32::from_str_radix(text, 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u32;
        signed += b as i8 as i32;
    }
    stored == unsigned || stored as i32 == signed
}

/// A block that can start a member after damage: a right checksum and the ustar magic
/// (what every current writer puts there; a random data block rarely has both).
fn plausible_header(block: &[u8]) -> bool {
    block[257..262] == *b"ustar" && checksum_ok(block)
}

/// One member as the walk finds it, before samples are formed.
struct RawMember {
    name: String,
    offset: u64,
    data_offset: u64,
    size: u64,
}

/// Walks the tar at `path` (given as the user wrote it): its image members with their
/// samples' sidecars, in tar order, and an entry for each part that could not be read. An
/// error only when the tar cannot be opened at all.
pub fn index_tar(path: &Path) -> Result<Vec<TarEntry>> {
    let file = File::open(path).map_err(Error::io(path))?;
    let len = file.metadata().map_err(Error::io(path))?.len();
    let tar: Arc<Path> = Arc::from(path);
    let tar_identity: Arc<Path> = Arc::from(super::image_identity(path).as_path());
    let mut walk = Walk {
        file,
        len,
        pos: 0,
        tar,
        tar_identity,
        out: Vec::new(),
        sample: Vec::new(),
    };
    // A compressed tar would read as one corrupt header: say what it is.
    if read_at(&walk.file, 0, 2.min(len as usize)).is_ok_and(|b| b == [0x1f, 0x8b]) {
        walk.unreadable(0, "the tar is gzip-compressed (a .tar.gz renamed .tar?): crosspool reads uncompressed tars; decompress it (gunzip) first".into());
        return Ok(walk.out);
    }
    if let Err(e) = walk.run() {
        // What was found before the error stays; the rest is accounted for as one part.
        let at = walk.pos;
        walk.unreadable(at, format!("reading the tar failed at byte {at}: {e}"));
    }
    Ok(walk.out)
}

impl TarEntry {
    /// An entry of the tar `tar` (identity `tar_identity`) whose header is at `offset`, before
    /// its data and sidecars are known.
    fn at(
        tar: Arc<Path>,
        tar_identity: Arc<Path>,
        member: Option<String>,
        offset: u64,
        problem: Option<String>,
    ) -> Self {
        TarEntry {
            tar,
            tar_identity,
            key: member
                .as_deref()
                .and_then(key_and_field)
                .map(|(k, _)| k.to_string()),
            member,
            offset,
            data_offset: offset + BLOCK,
            size: 0,
            sidecars: Arc::default(),
            problem,
        }
    }

    /// The one entry of a tar that cannot be read at all, and why.
    pub fn unreadable_tar(path: &Path, reason: String) -> Self {
        let identity = super::image_identity(path);
        TarEntry::at(
            Arc::from(path),
            Arc::from(identity.as_path()),
            None,
            0,
            Some(reason),
        )
    }
}

struct Walk {
    file: File,
    len: u64,
    /// Where the walk is: the header being read.
    pos: u64,
    tar: Arc<Path>,
    tar_identity: Arc<Path>,
    out: Vec<TarEntry>,
    /// The members of the sample being gathered (one key).
    sample: Vec<RawMember>,
}

impl Walk {
    fn entry(&self, member: Option<String>, offset: u64, problem: Option<String>) -> TarEntry {
        let (tar, identity) = (self.tar.clone(), self.tar_identity.clone());
        TarEntry::at(tar, identity, member, offset, problem)
    }

    /// Records a part of the tar that holds no readable member.
    fn unreadable(&mut self, offset: u64, reason: String) {
        self.end_sample();
        let e = self.entry(None, offset, Some(reason));
        self.out.push(e);
    }

    fn run(&mut self) -> std::io::Result<()> {
        // Name and size given by a GNU long-name or PAX header for the member after it.
        let mut long_name: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        let mut ext_offset: Option<u64> = None;
        loop {
            let pos = self.pos;
            if pos + BLOCK > self.len {
                let reason = if pos == self.len {
                    format!("the tar ends at byte {pos} without its end-of-archive blocks: it was probably cut short, and members after it are missing")
                } else {
                    format!(
                        "truncated tar: it ends at byte {} inside a header",
                        self.len
                    )
                };
                self.unreadable(pos, reason);
                break;
            }
            let block = read_at(&self.file, pos, BLOCK as usize)?;
            if block.iter().all(|&b| b == 0) {
                break; // end of archive
            }
            let header = tar::Header::from_byte_slice(&block);
            let size = header.entry_size().ok().filter(|_| checksum_ok(&block));
            let Some(header_size) = size else {
                let bad = ext_offset.take().unwrap_or(pos);
                (long_name, pax_size) = (None, None);
                match self.next_header(pos + BLOCK)? {
                    Some(next) => {
                        self.unreadable(bad, format!("corrupt tar header at byte {pos} (bad checksum or size): bytes {pos}..{next} skipped, to the next valid header"));
                        self.pos = next;
                        continue;
                    }
                    None => {
                        self.unreadable(bad, format!("corrupt tar header at byte {pos} (bad checksum or size), and no valid header after it: the last {} bytes could not be read", self.len - pos));
                        break;
                    }
                }
            };
            let kind = header.entry_type();
            let data = pos + BLOCK;
            let size = if kind.is_file() || kind.is_contiguous() {
                pax_size.take().unwrap_or(header_size)
            } else {
                header_size
            };
            let next = data + size.div_ceil(BLOCK) * BLOCK;
            let cut = data + size > self.len;
            if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
                ext_offset.get_or_insert(pos);
                if cut || size > MAX_EXTENSION_BYTES {
                    let reason = if cut {
                        format!("truncated tar: an extended header at byte {pos} runs past its end at byte {}", self.len)
                    } else {
                        format!("an extended header at byte {pos} of {size} bytes (over {MAX_EXTENSION_BYTES})")
                    };
                    self.unreadable(pos, reason);
                    if cut {
                        break;
                    }
                    self.pos = next;
                    continue;
                }
                let body = read_at(&self.file, data, size as usize)?;
                if kind.is_gnu_longname() {
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    long_name = Some(String::from_utf8_lossy(&body[..end]).into_owned());
                } else {
                    for ext in tar::PaxExtensions::new(&body).flatten() {
                        match ext.key() {
                            Ok("path") => {
                                long_name =
                                    Some(String::from_utf8_lossy(ext.value_bytes()).into_owned())
                            }
                            Ok("size") => pax_size = ext.value().ok().and_then(|v| v.parse().ok()),
                            _ => {}
                        }
                    }
                }
                self.pos = next;
                continue;
            }
            let header_at = ext_offset.take().unwrap_or(pos);
            let name = long_name
                .take()
                .unwrap_or_else(|| String::from_utf8_lossy(&header.path_bytes()).into_owned());
            if !(kind.is_file() || kind.is_contiguous()) {
                pax_size = None;
                // A member named like an image that is not a regular file (a link, a device)
                // has no data to read here: a failure with the reason, never silence.
                if let Some(what) = not_regular(kind).filter(|_| names_an_image(&name)) {
                    self.end_sample();
                    let e = self.entry(
                        Some(name.clone()),
                        header_at,
                        Some(format!("a {what} in the tar, not a regular member: crosspool reads the data of regular members only (store the file itself)")),
                    );
                    self.out.push(e);
                }
                if cut {
                    self.unreadable(
                        header_at,
                        format!(
                            "truncated tar: the entry {name} runs past its end at byte {}",
                            self.len
                        ),
                    );
                    break;
                }
                self.pos = next; // directories, links, global PAX headers: no image
                continue;
            }
            if cut {
                self.end_sample();
                let is_image = key_and_field(&name).is_some_and(|(_, f)| is_image_field(f));
                let reason = format!(
                    "truncated tar: the member{}'s {size} bytes of data end at byte {}, past the tar's end at byte {}",
                    if is_image { String::new() } else { format!(" {name}") },
                    data + size,
                    self.len
                );
                // An image cut short is its own row; any other member cut short is the tar's.
                let member = is_image.then_some(name);
                let e = self.entry(member, header_at, Some(reason));
                self.out.push(e);
                break;
            }
            self.add_member(RawMember {
                name,
                offset: header_at,
                data_offset: data,
                size,
            });
            self.pos = next;
        }
        self.end_sample();
        Ok(())
    }

    /// The offset of the first plausible header at or after `from` (on a block boundary).
    fn next_header(&self, from: u64) -> std::io::Result<Option<u64>> {
        const CHUNK: u64 = 256 * BLOCK;
        let mut at = from;
        while at + BLOCK <= self.len {
            let n = CHUNK.min((self.len - at) / BLOCK * BLOCK);
            let buf = read_at(&self.file, at, n as usize)?;
            if let Some(i) = buf.chunks_exact(BLOCK as usize).position(plausible_header) {
                return Ok(Some(at + i as u64 * BLOCK));
            }
            at += n;
        }
        Ok(None)
    }

    /// Adds a member to the sample being gathered, first closing that sample if the member
    /// starts another.
    fn add_member(&mut self, m: RawMember) {
        let key_field = key_and_field(&m.name);
        let key = key_field.map(|(k, _)| k);
        let current = self.sample.first().and_then(|f| key_and_field(&f.name));
        // A field the sample already has starts another sample with the same key (as
        // WebDataset would refuse it): a later sidecar never labels an earlier image.
        let repeated = key_field.is_some_and(|(_, field)| {
            self.sample
                .iter()
                .any(|s| key_and_field(&s.name).is_some_and(|(_, f)| f == field))
        });
        let (keyed, same) = (
            key.is_some(),
            key.is_some() && key == current.map(|(k, _)| k) && !repeated,
        );
        if !same {
            self.end_sample();
        }
        if keyed {
            self.sample.push(m);
        } else if names_an_image(&m.name) {
            // An image without a key (`x/.jpg`): a sample of its own, without sidecars.
            let mut e = self.entry(Some(m.name), m.offset, None);
            e.data_offset = m.data_offset;
            e.size = m.size;
            self.out.push(e);
        }
    }

    /// Turns the gathered sample into entries: one per image member, each with the sample's
    /// sidecars.
    fn end_sample(&mut self) {
        let members = std::mem::take(&mut self.sample);
        let mut sidecars = serde_json::Map::new();
        for m in &members {
            let Some((_, field)) = key_and_field(&m.name) else {
                continue;
            };
            if is_image_field(field) {
                continue;
            }
            sidecars.insert(field.to_string(), self.sidecar_value(field, m));
        }
        let sidecars = Arc::new(sidecars);
        for m in members {
            if !key_and_field(&m.name).is_some_and(|(_, f)| is_image_field(f)) {
                continue;
            }
            let mut e = self.entry(Some(m.name), m.offset, None);
            e.data_offset = m.data_offset;
            e.size = m.size;
            e.sidecars = sidecars.clone();
            self.out.push(e);
        }
    }

    /// A sidecar's value: parsed JSON for a `json` field, the text for UTF-8 text, else (binary,
    /// over [`MAX_SIDECAR_BYTES`], unreadable) an object saying what it is.
    fn sidecar_value(&self, field: &str, m: &RawMember) -> serde_json::Value {
        use serde_json::{json, Value};
        let not_carried = |why: &str| json!({ "bytes": m.size, "not_carried": why });
        if m.size > MAX_SIDECAR_BYTES {
            return not_carried("over the sidecar size limit");
        }
        let bytes = match read_at(&self.file, m.data_offset, m.size as usize) {
            Ok(b) => b,
            Err(e) => return not_carried(&format!("unreadable: {e}")),
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return not_carried("not UTF-8 text");
        };
        if field.ends_with("json") {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return v;
            }
        }
        Value::String(text)
    }
}

#[cfg(test)]
mod tests;
