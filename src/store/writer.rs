//! Feature files: sharded safetensors plus a JSON-lines manifest per shard, written so that an
//! interrupted run loses nothing it finished and a resumed run duplicates nothing.
//!
//! The file layout and names are defined in [`super::shards`].

use crate::error::{Error, Result};
use crate::input::{ImageId, ImageSource};
use crate::pooling::Quantization;
use crate::store::shards::{
    finished_shards, lock_part, parse_part_prefix, part_settings_files, read_manifest,
    settings_file, shard_file, PartLock,
};
use crate::store::tensor_file::{self, Element, TensorFile, View};
use crate::store::{ExtractSettings, ManifestLine};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

crate::choice! {
    /// How feature values are stored.
    pub enum OutputFormat {
        /// 32-bit floats.
        F32 = "f32",
        /// 16-bit floats (half the space; about 3 significant digits).
        F16 = "f16",
        /// Signs in 2 bits per value ({-1, 0, 1}), packed in u32.
        Sign2 = "sign2",
        /// Signs in 1 bit per value (positive or not), packed in u32.
        Bits1 = "bits1",
    }
}

impl OutputFormat {
    /// Values (floats) or 32-bit words (codes) a row of `cols` values is stored in.
    pub fn stored_cols(self, cols: usize) -> usize {
        self.codes().map_or(cols, |q| q.words_per_row(cols))
    }

    /// The sign code the format stores, if it is one.
    pub fn codes(self) -> Option<Quantization> {
        match self {
            OutputFormat::Sign2 => Some(Quantization::Sign2),
            OutputFormat::Bits1 => Some(Quantization::Bits1),
            OutputFormat::F32 | OutputFormat::F16 => None,
        }
    }
}

/// One image's result, as handed to the writer.
pub enum Row {
    /// Its feature: f32 values (for F32/F16) or packed words (for Sign2/Bits1), and for
    /// cross-layer features the mean activation of each channel of layer t+1.
    Ok {
        source: ImageSource,
        values: RowData,
        guide_mean: Option<Vec<f32>>,
    },
    /// Why it has no feature.
    Failed { source: ImageSource, reason: String },
}

/// Feature data of one image.
pub enum RowData {
    /// Float values.
    F32(Vec<f32>),
    /// Packed codes.
    Words(Vec<u32>),
}

/// Counts of what a writer has written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Images with a feature row.
    pub ok: usize,
    /// Images recorded as failed.
    pub failed: usize,
    /// Shards written.
    pub shards: usize,
}

/// Where the extraction pipeline hands its results, in input order.
pub trait RowSink: Send {
    /// What the sink gives back when finished.
    type Done: Send;
    /// Takes one image's result.
    fn push(&mut self, row: Row) -> Result<()>;
    /// Stores what is pending and gives back the result.
    fn finish(self) -> Result<Self::Done>;
}

/// Keeps every result in memory (for a few query images).
impl RowSink for Vec<Row> {
    type Done = Vec<Row>;
    fn push(&mut self, row: Row) -> Result<()> {
        Vec::push(self, row);
        Ok(())
    }
    fn finish(self) -> Result<Vec<Row>> {
        Ok(self)
    }
}

impl RowSink for ShardWriter {
    type Done = WriteStats;
    fn push(&mut self, row: Row) -> Result<()> {
        ShardWriter::push(self, row)
    }
    fn finish(self) -> Result<WriteStats> {
        ShardWriter::finish(self)
    }
}

/// Writes rows into shards of at most `shard_rows` images.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    format: OutputFormat,
    row_shape: [usize; 2],
    shard_rows: usize,
    next: usize,
    /// Rows not yet in a shard, each with the label given with it (see [`Self::push_labelled`]).
    pending: Vec<(Row, Option<String>)>,
    meta: HashMap<String, String>,
    stats: WriteStats,
    /// Held while the writer lives: one writer per part of a directory.
    _lock: Option<PartLock>,
    /// Class labels to record in the manifests.
    labels: Option<crate::store::labels::Labels>,
    /// Failed images of the runs resumed, not tried again.
    earlier_failures: usize,
}

impl ShardWriter {
    /// Opens `dir` for writing the part with file-name `prefix` (`""`, or `partIofN-`).
    /// `settings` describe the run; with `resume`, they must equal those the part was started
    /// with, and the images already recorded (ok or failed) are returned, as
    /// [`crate::input::image_identity`]s, so the caller can skip them; without it, the directory must hold
    /// no shards of this part. Parts of another split of the input (`--shard I/M` for
    /// another M, or none) would extract images twice, and are refused.
    pub fn open(
        dir: &Path,
        prefix: &str,
        settings: &ExtractSettings,
        shard_rows: usize,
        resume: bool,
    ) -> Result<(Self, HashSet<ImageId>)> {
        Self::open_with(dir, prefix, settings, shard_rows, resume, false)
    }

    /// [`ShardWriter::open`]; with `retry_failed`, the images earlier runs recorded as
    /// failed are taken out of their manifests (rewritten whole, atomically) and not
    /// returned as done, so that the run tries them again and each keeps one line.
    pub fn open_with(
        dir: &Path,
        prefix: &str,
        settings: &ExtractSettings,
        shard_rows: usize,
        resume: bool,
        retry_failed: bool,
    ) -> Result<(Self, HashSet<ImageId>)> {
        // create_dir_all's own error here would be "File exists", which reads as a clash.
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Config(format!(
                "cannot write {}: it is a file, not a directory (give a new directory or one from an earlier run)",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(Error::write(dir))?;
        let lock = lock_part(dir, prefix)?;
        check_same_split(dir, prefix)?;
        check_other_parts(dir, prefix, settings)?;
        let settings_path = dir.join(settings_file(prefix));
        let finished = finished_shards(dir, Some(prefix))?;
        let mut done = HashSet::new();
        let (mut next, mut earlier_failures) = (0, 0);
        if !finished.is_empty() {
            if !resume {
                return Err(Error::Config(format!(
                    "{} already holds {} finished shard(s); pass --resume to continue that run, or choose another --out",
                    dir.display(),
                    finished.len()
                )));
            }
            let text =
                std::fs::read_to_string(&settings_path).map_err(Error::io(&settings_path))?;
            let before = ExtractSettings::from_json(&text, &settings_path.display().to_string())?;
            if let Some((what, path, was, now)) = settings.changed_files(&before).into_iter().next()
            {
                return Err(Error::Config(format!(
                    "the {what} file {path} is not the one this run in {} started with (its content changed: {was} then, {now} now); resuming would mix features of two {}: extract into another --out",
                    dir.display(),
                    if what == "weights" { "networks" } else { "feature maps" }
                )));
            }
            if !settings.same_run(&before) {
                return Err(Error::Config(format!(
                    "{} was written with other settings than this run's; resume with the same flags or use another --out ({})",
                    settings_path.display(),
                    settings.differences(&before).join("; ")
                )));
            }
            for shard in &finished {
                let lines = read_manifest(&shard.manifest)?;
                let failed = lines.iter().filter(|l| l.ok_row().is_none()).count();
                if retry_failed && failed > 0 {
                    rewrite_manifest(
                        &shard.manifest,
                        lines.iter().filter(|l| l.ok_row().is_some()),
                    )?;
                }
                for line in &lines {
                    if !(retry_failed && line.ok_row().is_none()) {
                        done.insert(line.identity()?);
                    }
                }
                if !retry_failed {
                    earlier_failures += failed;
                }
                next = next.max(shard.index + 1);
            }
        }
        tensor_file::write_atomic(&settings_path, settings.to_json().as_bytes())?;
        let row_shape = [
            settings.feature_rows,
            settings.format.stored_cols(settings.feature_cols),
        ];
        let mut meta = settings.to_metadata();
        meta.insert(
            "crosspool.layout".into(),
            format!("[rows, {}, {}]", row_shape[0], row_shape[1]),
        );
        Ok((
            ShardWriter {
                dir: dir.to_path_buf(),
                prefix: prefix.into(),
                format: settings.format,
                row_shape,
                shard_rows: shard_rows.max(1),
                next,
                pending: Vec::new(),
                meta,
                stats: WriteStats::default(),
                _lock: lock,
                labels: None,
                earlier_failures,
            },
            done,
        ))
    }

    /// Records each image's label from `labels` in the manifests.
    pub fn with_labels(mut self, labels: crate::store::labels::Labels) -> Self {
        self.labels = Some(labels);
        self
    }

    /// `[rows, values or words per row]` of each image's stored feature.
    pub fn row_shape(&self) -> [usize; 2] {
        self.row_shape
    }

    /// Images that failed in the runs this one resumes and are not tried again.
    pub fn earlier_failures(&self) -> usize {
        self.earlier_failures
    }

    fn shard_name(&self, k: usize, ext: &str) -> String {
        shard_file(&self.prefix, k, ext)
    }

    /// Adds one image's result; writes a shard when `shard_rows` results are pending.
    pub fn push(&mut self, row: Row) -> Result<()> {
        self.push_labelled(row, None)
    }

    /// [`Self::push`], recording `label` as the image's class in the manifest (for rows that
    /// come with their label, as from a Ray dataset; `None`: the writer's labels, if any).
    pub fn push_labelled(&mut self, row: Row, label: Option<String>) -> Result<()> {
        self.pending.push((row, label));
        if self.pending.len() >= self.shard_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending results as a shard (nothing if none are pending).
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let name = self.shard_name(self.next, "safetensors");
        let [d1, d2] = self.row_shape;
        let mut bytes: Vec<u8> = Vec::new();
        let mut guide: Vec<u8> = Vec::new();
        let mut guide_rows = 0usize;
        let mut lines = String::new();
        let mut n = 0usize;
        for (row, label) in &rows {
            let line = match row {
                Row::Ok {
                    source,
                    values,
                    guide_mean,
                } => {
                    if let Some(g) = guide_mean {
                        if g.len() != d1 {
                            return Err(Error::Config(format!(
                                "{}: {} guidance means for {d1} pooling channels",
                                source.name().display(),
                                g.len()
                            )));
                        }
                        guide.extend(g.iter().flat_map(|x| x.to_le_bytes()));
                        guide_rows += 1;
                    }
                    match (values, self.format) {
                        (RowData::F32(v), OutputFormat::F32) => {
                            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()))
                        }
                        (RowData::F32(v), OutputFormat::F16) => bytes
                            .extend(v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes())),
                        (RowData::Words(w), OutputFormat::Sign2 | OutputFormat::Bits1) => {
                            bytes.extend(w.iter().flat_map(|x| x.to_le_bytes()))
                        }
                        _ => {
                            return Err(Error::Config(
                                "row data does not match the output format".into(),
                            ))
                        }
                    }
                    n += 1;
                    ManifestLine::ok(source, &name, n - 1)
                }
                Row::Failed { source, reason } => ManifestLine::failed(source, reason.clone()),
            };
            let source = match row {
                Row::Ok { source, .. } | Row::Failed { source, .. } => source,
            };
            let line = ManifestLine {
                label: label
                    .clone()
                    .or_else(|| self.labels.as_ref().and_then(|l| l.label_of_source(source))),
                ..line
            };
            lines.push_str(
                &serde_json::to_string(&line)
                    .map_err(|e| Error::Config(format!("manifest line: {e}")))?,
            );
            lines.push('\n');
        }
        let (tensor, element) = match self.format {
            OutputFormat::F32 => ("features", Element::F32),
            OutputFormat::F16 => ("features", Element::F16),
            OutputFormat::Sign2 | OutputFormat::Bits1 => ("codes", Element::U32),
        };
        let mut views = vec![(tensor, element, vec![n, d1, d2], &bytes[..])];
        if guide_rows > 0 {
            if guide_rows != n {
                return Err(Error::Config(format!(
                    "shard {name}: {guide_rows} of {n} images have guidance means"
                )));
            }
            views.push(("guide_mean", Element::F32, vec![n, d1], &guide[..]));
        }
        let data = tensor_file::serialize(self.meta.clone(), &views)
            .map_err(|e| Error::Config(format!("shard {name}: {e}")))?;
        tensor_file::write_atomic(&self.dir.join(&name), &data)?;
        tensor_file::write_atomic(
            &self.dir.join(self.shard_name(self.next, "jsonl")),
            lines.as_bytes(),
        )?;
        self.stats.ok += n;
        self.stats.failed += rows.len() - n;
        self.stats.shards += 1;
        self.next += 1;
        Ok(())
    }

    /// Writes what is pending and returns the counts.
    pub fn finish(mut self) -> Result<WriteStats> {
        self.flush()?;
        Ok(self.stats)
    }
}

/// Concatenates the features of every finished shard in `dir` — of the part with `prefix`,
/// or of every part in part order — into one `.npy` file (f32 or f16 as stored; packed codes
/// as uint32).
pub fn export_npy(dir: &Path, prefix: Option<&str>, out: &Path) -> Result<(usize, [usize; 2])> {
    let shards = finished_shards(dir, prefix)?;
    // First the shards' headers: the .npy header needs the total rows, and every shard
    // must hold the same kind of rows, extracted alike.
    let (mut shape, mut dtype, mut rows) = (None, None, 0);
    let mut first = None;
    for shard in &shards {
        let path = &shard.data;
        let map = map_file(path)?;
        let st = read_shard(path, &map)?;
        ExtractSettings::of_shard(&st.meta, path)?.check_one_set(path, &mut first)?;
        let t = features_of(path, &st)?;
        let s = &t.shape;
        let this = [s[1], s[2]];
        if shape.is_some_and(|p| p != this) || dtype.is_some_and(|d| d != t.element) {
            return Err(Error::Config(format!(
                "{} does not match the other shards",
                path.display()
            )));
        }
        shape = Some(this);
        dtype = Some(t.element);
        rows += s[0];
    }
    let shape = shape.ok_or_else(|| {
        Error::Config(match prefix {
            Some(p) => format!(
                "{} holds no finished shards of part '{p}' (run crosspool extract --out {} first)",
                dir.display(),
                dir.display()
            ),
            None => format!(
                "{} holds no finished shards (run crosspool extract --out {} first)",
                dir.display(),
                dir.display()
            ),
        })
    })?;
    let descr = match dtype {
        Some(Element::F16) => "<f2",
        Some(Element::U32) => "<u4",
        _ => "<f4",
    };
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {}, {}), }}",
        shape[0], shape[1]
    );
    // Pad so that the data starts on a 64-byte boundary, as the format asks.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    // Then the rows, shard by shard, into the file under a temporary name: memory stays
    // one shard's whatever the data's size.
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let write = |e: std::io::Error| Error::write(&tmp)(e);
    let written = (|| -> Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(write)?);
        file.write_all(b"\x93NUMPY\x01\x00").map_err(write)?;
        file.write_all(&(header.len() as u16).to_le_bytes())
            .map_err(write)?;
        file.write_all(header.as_bytes()).map_err(write)?;
        for shard in &shards {
            let path = &shard.data;
            let map = map_file(path)?;
            let st = read_shard(path, &map)?;
            let t = features_of(path, &st)?;
            check_finite(&shard.manifest, path, t)?;
            file.write_all(t.data).map_err(write)?;
        }
        file.into_inner()
            .map_err(|e| write(e.into_error()))?
            .sync_all()
            .map_err(write)
    })();
    if let Err(e) = written {
        // Nothing half-written is left behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(Error::write(out))?;
    Ok((rows, shape))
}

/// The file at `path`, mapped (read in place: a shard is not copied into memory).
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    // SAFETY: read while the file is open; crosspool replaces shards by renaming, never
    // writes one in place.
    unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(path))
}

/// A feature shard's tensors.
fn read_shard<'a>(path: &Path, bytes: &'a [u8]) -> Result<TensorFile<'a>> {
    TensorFile::parse(bytes).map_err(|message| Error::BadFile {
        path: path.display().to_string(),
        what: "feature shard",
        message,
    })
}

/// A shard's `features` (or `codes`) tensor.
fn features_of<'a, 'f>(path: &Path, st: &'f TensorFile<'a>) -> Result<&'f View<'a>> {
    st.tensor("features")
        .or_else(|| st.tensor("codes"))
        .ok_or_else(|| Error::Config(format!("{} holds no features", path.display())))
}

/// Fails, naming the image, shard and row, if any stored float is NaN or infinite (a
/// corrupted shard), rather than export it.
fn check_finite(manifest: &Path, path: &Path, t: &View<'_>) -> Result<()> {
    let Some(values) = t.to_f32() else {
        return Ok(());
    };
    let per: usize = t.shape.iter().skip(1).product::<usize>().max(1);
    let Some(row) = values
        .chunks(per)
        .position(|r| r.iter().any(|x| !x.is_finite()))
    else {
        return Ok(());
    };
    let image = read_manifest(manifest)?
        .into_iter()
        .find(|l| l.ok_row() == Some(row))
        .map_or_else(|| "an unknown image".to_string(), |l| l.name());
    Err(Error::BadFile {
        path: path.display().to_string(),
        what: "feature shard",
        message: format!(
            "row {row} ({image}) holds NaN or infinite values: the shard is corrupt; extract that image again"
        ),
    })
}

/// The split of the input a part prefix belongs to: `None` for an unsplit run, `Some(N)` for
/// `partIofN-`.
fn split_of(prefix: &str) -> Option<usize> {
    parse_part_prefix(prefix).map(|(_, n)| n)
}

/// Refuses to add the part `prefix` to a directory holding finished shards of another split.
/// Writes `lines` as the manifest at `path`, atomically.
fn rewrite_manifest<'a>(path: &Path, lines: impl Iterator<Item = &'a ManifestLine>) -> Result<()> {
    let mut text = String::new();
    for line in lines {
        text.push_str(
            &serde_json::to_string(line)
                .map_err(|e| Error::Config(format!("manifest line: {e}")))?,
        );
        text.push('\n');
    }
    tensor_file::write_atomic(path, text.as_bytes())
}

/// Refuses a part whose settings differ from those another part of `dir` recorded: the
/// parts' shards are read as one set of features.
fn check_other_parts(dir: &Path, prefix: &str, settings: &ExtractSettings) -> Result<()> {
    let mine = settings_file(prefix);
    for path in part_settings_files(dir)? {
        if path.file_name().is_some_and(|n| n == mine.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
        let other = ExtractSettings::from_json(&text, &path.display().to_string())?;
        if !settings.same_run(&other) {
            return Err(Error::Config(format!(
                "{} holds another part extracted with other settings ({}: {}); the parts of one --out are read as one set of features: use the same flags, or another --out",
                dir.display(),
                path.display(),
                settings.differences(&other).join("; ")
            )));
        }
    }
    Ok(())
}

fn check_same_split(dir: &Path, prefix: &str) -> Result<()> {
    let mine = split_of(prefix);
    let describe = |s: Option<usize>| match s {
        None => "an unsplit run (no --shard)".to_string(),
        Some(n) => format!("a {n}-way split (--shard I/{n})"),
    };
    if let Some(other) = finished_shards(dir, None)?
        .into_iter()
        .find(|s| split_of(&s.prefix) != mine)
    {
        return Err(Error::Config(format!(
            "{} holds shards of {} ({}), and this run is {}: the same images would be extracted twice; use the same --shard split, or another --out",
            dir.display(),
            describe(split_of(&other.prefix)),
            other.manifest.display(),
            describe(mine)
        )));
    }
    Ok(())
}
