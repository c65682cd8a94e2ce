//! A retrieval database: every image's feature (sign codes or floats), the mean activations
//! of layer t+1 that choose a query's channels, the image paths, and the extraction settings
//! (so that new query images can be extracted the same way).
//!
//! On disk an index is a directory:
//! - `index.safetensors`: `codes` `[n, rows, words]` (U32, see `pooling::Quantization`) or
//!   `features` `[n, rows, cols]` (F32, each image L2-normalised as a whole), and for
//!   cross-layer features `guide_mean` `[n, rows]` (F32); its metadata holds the extraction
//!   settings ([`ExtractSettings`]) and the `crosspool.index.*` keys: `version` (2; version 1
//!   spelt the kind in Rust's Debug form and is still read), `kind` (`bits1`, `sign2`, `f32`),
//!   `rows`, `cols` and `images` (the fingerprint of the `images.jsonl` it was written
//!   with: `images.jsonl` is written first and `index.safetensors` last, so a save cut
//!   between the two is refused on loading rather than read as a mix);
//! - `images.jsonl`: the image paths, one JSON string a line, in row order.

use crate::error::{Error, Result};
use crate::pooling::Quantization;
use crate::store::shards::{bad_shard, for_each_shard};
use crate::store::tensor_file::{self, write_atomic, Element, TensorFile, View};
use crate::store::ExtractSettings;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// The stored features.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexData {
    /// Sign codes, `[n][rows][words_per_row]`.
    Codes {
        /// 1-bit or 2-bit signs.
        format: Quantization,
        /// u32 words per row.
        words_per_row: usize,
        /// The packed words.
        words: Vec<u32>,
    },
    /// Float features, `[n][rows][cols]`, each image of unit L2 norm.
    Floats(Vec<f32>),
}

/// A retrieval database held in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrievalIndex {
    /// Rows per image: pooling channels (layer t+1) for cross-layer features.
    pub rows: usize,
    /// Values per row before any packing.
    pub cols: usize,
    /// The features.
    pub data: IndexData,
    /// Cross-layer only: `[n][rows]` mean activation of each channel of layer t+1.
    pub guide_mean: Option<Vec<f32>>,
    /// Image paths, in row order.
    pub paths: Vec<String>,
    /// The `extract` settings the features were made with.
    pub settings: ExtractSettings,
}

/// What building an index found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Shards read.
    pub shards: usize,
    /// Images in the index.
    pub images: usize,
    /// Images the extraction recorded as failed (not in the index).
    pub failed: usize,
    /// Images left out because their stored values are not finite (a corrupted shard):
    /// `(image path, shard and row, what is wrong)`. One such row would wreck every query's
    /// ranking.
    pub rejected: Vec<(String, String)>,
}

fn bad_index(path: &Path, message: impl Into<String>) -> Error {
    Error::BadFile {
        path: path.display().to_string(),
        what: "index",
        message: message.into(),
    }
}

/// The index format this crosspool writes, and the newest it reads.
pub const INDEX_VERSION: u32 = 2;

/// How [`RetrievalIndex::build`] stores float features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// 1-bit codes for cross-layer features (the paper's retrieval setting), floats for
    /// the baselines; stored codes as they are.
    Auto,
    /// Sign codes of this format.
    Codes(Quantization),
    /// Floats (stored codes stay codes).
    Floats,
}

fn meta_usize(meta: &BTreeMap<String, String>, key: &str, origin: &Path) -> Result<usize> {
    meta.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad_index(origin, format!("metadata lacks a number under {key}")))
}

/// Scales `v` to unit L2 norm (an all-zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
    if n > 0.0 {
        let inv = (1.0 / n) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// The metadata key of the fingerprint of `images.jsonl` that `index.safetensors` was
/// written with (indexes from before it have none).
const IMAGES_FINGERPRINT: &str = "crosspool.index.images";

/// FNV-1a (64-bit) of `bytes` and their length: enough to tell two name lists apart.
fn fingerprint(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("fnv1a64:{hash:016x}:{}", bytes.len())
}

impl RetrievalIndex {
    /// Images in the index.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the index holds no image.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// What the index stores, as files and messages name it: `bits1`, `sign2` or `f32`.
    pub fn kind(&self) -> &'static str {
        match &self.data {
            IndexData::Codes { format, .. } => kind_name(Some(*format)),
            IndexData::Floats(_) => kind_name(None),
        }
    }

    /// u32 words (codes) or f32 values (floats) per row.
    pub fn row_len(&self) -> usize {
        match &self.data {
            IndexData::Codes { words_per_row, .. } => *words_per_row,
            IndexData::Floats(_) => self.cols,
        }
    }

    /// The features as `[n][rows][row_len]` words (floats as their bits), as the scoring
    /// kernel reads them.
    pub fn words(&self) -> &[u32] {
        match &self.data {
            IndexData::Codes { words, .. } => words,
            IndexData::Floats(v) => bytemuck::cast_slice(v),
        }
    }

    /// Bytes of feature data per image (codes or floats, plus the guidance means).
    pub fn bytes_per_image(&self) -> usize {
        (self.rows * self.row_len() + self.guide_mean.as_ref().map_or(0, |_| self.rows)) * 4
    }

    /// The guidance means of image `i`, if the index has them.
    pub fn guide_mean_of(&self, i: usize) -> Option<&[f32]> {
        self.guide_mean
            .as_ref()
            .map(|g| &g[i * self.rows..(i + 1) * self.rows])
    }

    /// A query's float feature (`[rows][cols]`) in this index's encoding, as the index
    /// stored its own images: unit length, then sign codes if it holds codes.
    pub fn encode_query(&self, mut feature: Vec<f32>) -> Vec<u32> {
        l2_normalize(&mut feature);
        match &self.data {
            IndexData::Codes { format, .. } => format.pack(&feature, self.cols),
            IndexData::Floats(_) => bytemuck::cast_vec(feature),
        }
    }

    /// Builds an index from the shards `crosspool extract` wrote to `dir` (every part).
    /// Float features are normalised to unit length per image and stored as `storage` says;
    /// stored codes are taken as they are (`Storage::Codes`, if given, must name their
    /// format).
    pub fn build(dir: &Path, storage: Storage) -> Result<(Self, BuildStats)> {
        let mut builder: Option<IndexBuilder> = None;
        for_each_shard(dir, |shard| {
            let ok_rows: Vec<(String, usize)> = shard
                .lines
                .iter()
                .filter_map(|l| l.ok_row().map(|r| (l.name(), r)))
                .collect();
            let failed = shard.lines.len() - ok_rows.len();
            let b = match &mut builder {
                Some(b) => b,
                None => builder.insert(IndexBuilder::new(shard.settings.clone(), storage)?),
            };
            b.add_shard(shard.path, &shard.tensors, &ok_rows)?;
            b.stats.failed += failed;
            Ok(())
        })?;
        let b = builder.expect("for_each_shard fails on a directory without shards");
        Ok(b.finish())
    }

    /// Writes the index into directory `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(Error::write(dir))?;
        let n = self.len();
        let mut meta = self.settings.to_metadata();
        meta.insert("crosspool.index.version".into(), INDEX_VERSION.to_string());
        meta.insert("crosspool.index.rows".into(), self.rows.to_string());
        meta.insert("crosspool.index.cols".into(), self.cols.to_string());
        let (name, element, shape, bytes): (&str, Element, Vec<usize>, &[u8]) = match &self.data {
            IndexData::Codes {
                format,
                words_per_row,
                words,
            } => {
                meta.insert(
                    "crosspool.index.kind".into(),
                    kind_name(Some(*format)).into(),
                );
                (
                    "codes",
                    Element::U32,
                    vec![n, self.rows, *words_per_row],
                    bytemuck::cast_slice(words),
                )
            }
            IndexData::Floats(v) => {
                meta.insert("crosspool.index.kind".into(), kind_name(None).into());
                (
                    "features",
                    Element::F32,
                    vec![n, self.rows, self.cols],
                    bytemuck::cast_slice(v),
                )
            }
        };
        let path = dir.join("index.safetensors");
        let mut views = vec![(name, element, shape, bytes)];
        if let Some(g) = &self.guide_mean {
            let g = bytemuck::cast_slice(g);
            views.push(("guide_mean", Element::F32, vec![n, self.rows], g));
        }
        let mut lines = String::new();
        for p in &self.paths {
            lines.push_str(&serde_json::Value::from(p.as_str()).to_string());
            lines.push('\n');
        }
        // The names first, the index last holding their fingerprint: a save cut between the
        // two is found on loading, rather than new names read beside old codes.
        meta.insert(IMAGES_FINGERPRINT.into(), fingerprint(lines.as_bytes()));
        write_atomic(&dir.join("images.jsonl"), lines.as_bytes())?;
        let data =
            tensor_file::serialize(meta, &views).map_err(|e| bad_index(&path, e.to_string()))?;
        write_atomic(&path, &data)
    }

    /// Reads an index written by [`RetrievalIndex::save`] of this or an earlier version.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("index.safetensors");
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        let st = TensorFile::parse(&bytes).map_err(|e| bad_index(&path, e))?;
        let meta = st.meta.clone();
        let all: BTreeMap<String, String> =
            meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let version = match all.get("crosspool.index.version").map(|v| v.parse::<u32>()) {
            Some(Ok(v)) if (1..=INDEX_VERSION).contains(&v) => v,
            Some(Ok(v)) if v > INDEX_VERSION => {
                return Err(bad_index(
                    &path,
                    format!("written by a newer crosspool (index version {v}; this one reads up to {INDEX_VERSION}): upgrade crosspool"),
                ))
            }
            _ => return Err(bad_index(&path, "not a crosspool index")),
        };
        let settings = ExtractSettings::from_metadata(&meta, &path.display().to_string())?;
        let rows = meta_usize(&all, "crosspool.index.rows", &path)?;
        let cols = meta_usize(&all, "crosspool.index.cols", &path)?;
        let list = dir.join("images.jsonl");
        let names = std::fs::read_to_string(&list).map_err(Error::io(&list))?;
        if let Some(want) = all.get(IMAGES_FINGERPRINT) {
            if *want != fingerprint(names.as_bytes()) {
                return Err(bad_index(
                    &list,
                    format!("is not the list {} was written with (a save was cut short, or the file changed): build the index again", path.display()),
                ));
            }
        }
        let paths: Vec<String> = names
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<String>(l)
                    .map_err(|e| bad_index(&list, format!("bad line ({e})")))
            })
            .collect::<Result<_>>()?;
        let n = paths.len();
        let kind = all.get("crosspool.index.kind").map(String::as_str);
        let data = match kind.and_then(|k| parse_kind(k, version)) {
            Some(Some(format)) => {
                let t = st
                    .tensor("codes")
                    .ok_or_else(|| bad_index(&path, "no codes tensor"))?;
                let wpr = format.words_per_row(cols);
                if t.element != Element::U32 || t.shape != [n, rows, wpr] {
                    return Err(bad_index(
                        &path,
                        format!(
                            "codes are {:?} {:?}, expected U32 [{n}, {rows}, {wpr}] for {n} images",
                            t.dtype_name, t.shape
                        ),
                    ));
                }
                IndexData::Codes {
                    format,
                    words_per_row: wpr,
                    words: bytemuck::pod_collect_to_vec(t.data),
                }
            }
            Some(None) => {
                let t = st
                    .tensor("features")
                    .ok_or_else(|| bad_index(&path, "no features tensor"))?;
                if t.element != Element::F32 || t.shape != [n, rows, cols] {
                    return Err(bad_index(&path, format!("features are {} {:?}, expected F32 [{n}, {rows}, {cols}] for {n} images", t.dtype_name, t.shape)));
                }
                IndexData::Floats(bytemuck::pod_collect_to_vec(t.data))
            }
            None => {
                return Err(bad_index(
                    &path,
                    format!("unknown index kind {}", kind.unwrap_or("(none)")),
                ))
            }
        };
        let guide_mean = match st.tensor("guide_mean") {
            Some(g) => {
                if g.element != Element::F32 || g.shape != [n, rows] {
                    return Err(bad_index(&path, "guide_mean does not match the features"));
                }
                Some(bytemuck::pod_collect_to_vec(g.data))
            }
            None => None,
        };
        Ok(RetrievalIndex {
            rows,
            cols,
            data,
            guide_mean,
            paths,
            settings,
        })
    }
}

impl RetrievalIndex {
    /// Uploads the features to the GPU for scoring.
    pub fn upload(&self, ctx: &crate::gpu::GpuContext) -> Result<crate::gpu::GpuDatabase> {
        let kind = match &self.data {
            IndexData::Codes { format, .. } => crate::gpu::ScoreKind::Codes(*format),
            IndexData::Floats(_) => crate::gpu::ScoreKind::Floats,
        };
        crate::gpu::GpuDatabase::from_words(
            ctx,
            kind,
            self.rows,
            self.row_len(),
            self.cols,
            self.words(),
        )
    }
}

/// The name an index gives its kind: the code format, or `None` for floats.
fn kind_name(codes: Option<Quantization>) -> &'static str {
    match codes {
        Some(Quantization::Bits1) => "bits1",
        Some(Quantization::Sign2) => "sign2",
        None => "f32",
    }
}

/// The kind named `name` in an index of `version` (1 spelt them `Bits1`, `Sign2`, `F32`).
fn parse_kind(name: &str, version: u32) -> Option<Option<Quantization>> {
    let name = if version == 1 {
        match name {
            "Bits1" => "bits1",
            "Sign2" => "sign2",
            "F32" => "f32",
            _ => return None,
        }
    } else {
        name
    };
    [Some(Quantization::Bits1), Some(Quantization::Sign2), None]
        .into_iter()
        .find(|k| kind_name(*k) == name)
}

/// An index being gathered from shards, one at a time.
struct IndexBuilder {
    settings: ExtractSettings,
    rows: usize,
    cols: usize,
    /// The code format to store, or floats.
    binarize: Option<Quantization>,
    words: Vec<u32>,
    floats: Vec<f32>,
    guide: Vec<f32>,
    has_guide: Option<bool>,
    paths: Vec<String>,
    stats: BuildStats,
}

impl IndexBuilder {
    fn new(settings: ExtractSettings, storage: Storage) -> Result<Self> {
        let stored = settings.codes();
        let binarize = match storage {
            Storage::Codes(q) => {
                if stored.is_some_and(|s| s != q) {
                    return Err(Error::Config(format!(
                        "the features are stored as {} codes and cannot be re-coded as {}; extract floats (--format f32) to choose",
                        kind_name(stored),
                        kind_name(Some(q))
                    )));
                }
                Some(q)
            }
            Storage::Floats => stored,
            Storage::Auto => stored.or(settings
                .pooling
                .is_cross_layer()
                .then_some(Quantization::Bits1)),
        };
        Ok(IndexBuilder {
            rows: settings.feature_rows,
            cols: settings.feature_cols,
            settings,
            binarize,
            words: Vec::new(),
            floats: Vec::new(),
            guide: Vec::new(),
            has_guide: None,
            paths: Vec::new(),
            stats: BuildStats::default(),
        })
    }

    /// Adds the rows `ok_rows` (path, row) of the shard at `path`.
    fn add_shard(
        &mut self,
        path: &Path,
        st: &TensorFile<'_>,
        ok_rows: &[(String, usize)],
    ) -> Result<()> {
        let data = st.tensor("codes").or_else(|| st.tensor("features"));
        let t = data.ok_or_else(|| bad_shard(path, "holds neither codes nor features"))?;
        // Each tensor is read once: checked for non-finite values, then taken from.
        let floats = t.to_f32();
        let guide = st.tensor("guide_mean");
        let guide_values = guide.and_then(View::to_f32);
        let per = |t: &View<'_>| t.shape.iter().skip(1).product::<usize>();
        let mut checked = Vec::new();
        if let Some(v) = &floats {
            checked.push(("features", &v[..], per(t)));
        }
        if let (Some(g), Some(v)) = (&guide, &guide_values) {
            checked.push(("guide_mean", &v[..], per(g)));
        }
        let (good, bad) = split_finite(path, &checked, ok_rows);
        self.stats.rejected.extend(bad);
        let ok_rows = &good[..];
        let images = self.add_features(path, t, floats.as_deref(), ok_rows)?;
        self.add_guide(path, guide.zip(guide_values.as_deref()), images, ok_rows)?;
        self.stats.shards += 1;
        self.stats.images += ok_rows.len();
        self.paths.extend(ok_rows.iter().map(|(p, _)| p.clone()));
        Ok(())
    }

    /// The features of `ok_rows`, normalised and coded as the index stores them; returns the
    /// number of images the shard holds.
    fn add_features(
        &mut self,
        path: &Path,
        t: &View<'_>,
        floats: Option<&[f32]>,
        ok_rows: &[(String, usize)],
    ) -> Result<usize> {
        let (rows, cols) = (self.rows, self.cols);
        let shape = t.shape.clone();
        let per: usize = shape.iter().skip(1).product();
        let fits =
            shape.len() == 3 && shape[1] == rows && ok_rows.iter().all(|(_, r)| *r < shape[0]);
        if !fits {
            return Err(bad_shard(
                path,
                format!(
                    "shape {shape:?} does not fit {} images of {rows} rows",
                    ok_rows.len()
                ),
            ));
        }
        let row_range = |r: usize| r * per..(r + 1) * per;
        match (floats, t.element, self.binarize) {
            (None, Element::U32, Some(q)) => {
                if shape[2] != q.words_per_row(cols) {
                    return Err(bad_shard(
                        path,
                        format!("{} words per row for {cols} values", shape[2]),
                    ));
                }
                let all: Vec<u32> = bytemuck::pod_collect_to_vec(t.data);
                for (_, r) in ok_rows {
                    self.words.extend_from_slice(&all[row_range(*r)]);
                }
            }
            (Some(all), _, _) => {
                if shape[2] != cols {
                    return Err(bad_shard(
                        path,
                        format!("{} values per row, expected {cols}", shape[2]),
                    ));
                }
                let mut chosen: Vec<f32> = Vec::with_capacity(ok_rows.len() * per);
                for (_, r) in ok_rows {
                    chosen.extend_from_slice(&all[row_range(*r)]);
                }
                chosen.par_chunks_mut(per).for_each(l2_normalize);
                match self.binarize {
                    Some(q) => {
                        let packed: Vec<Vec<u32>> = chosen
                            .par_chunks(per)
                            .map(|img| q.pack(img, cols))
                            .collect();
                        self.words.extend(packed.into_iter().flatten());
                    }
                    None => self.floats.extend(chosen),
                }
            }
            (_, other, _) => return Err(bad_shard(path, format!("features of type {other:?}"))),
        }
        Ok(shape[0])
    }

    /// The layer t+1 means of `ok_rows`, which every shard has or none does.
    fn add_guide(
        &mut self,
        path: &Path,
        guide: Option<(&View<'_>, &[f32])>,
        images: usize,
        ok_rows: &[(String, usize)],
    ) -> Result<()> {
        let rows = self.rows;
        // A shard of failed images has no rows, so nothing to say about guides either way.
        if images == 0 {
            return Ok(());
        }
        match guide {
            Some((g, all)) => {
                if self.has_guide == Some(false)
                    || g.element != Element::F32
                    || g.shape != [images, rows]
                {
                    return Err(bad_shard(
                        path,
                        "guide_mean does not match the other shards or the features",
                    ));
                }
                self.has_guide = Some(true);
                for (_, r) in ok_rows {
                    self.guide.extend_from_slice(&all[r * rows..(r + 1) * rows]);
                }
            }
            None => {
                if self.has_guide == Some(true) {
                    return Err(bad_shard(path, "has no guide_mean but other shards do"));
                }
                self.has_guide = Some(false);
            }
        }
        Ok(())
    }

    fn finish(self) -> (RetrievalIndex, BuildStats) {
        let data = match self.binarize {
            Some(q) => IndexData::Codes {
                format: q,
                words_per_row: q.words_per_row(self.cols),
                words: self.words,
            },
            None => IndexData::Floats(self.floats),
        };
        let index = RetrievalIndex {
            rows: self.rows,
            cols: self.cols,
            data,
            guide_mean: (self.has_guide == Some(true)).then_some(self.guide),
            paths: self.paths,
            settings: self.settings,
        };
        (index, self.stats)
    }
}

/// `(image path, row in its shard)`.
type ShardRow = (String, usize);

/// `(image path, why it was left out)`.
type Rejected = (String, String);

/// Splits `ok_rows` into those whose values in every `(name, values, values per image)` of
/// `tensors` are finite and those that are not, each named with its shard and row.
fn split_finite(
    path: &Path,
    tensors: &[(&str, &[f32], usize)],
    ok_rows: &[ShardRow],
) -> (Vec<ShardRow>, Vec<Rejected>) {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (image, row) in ok_rows {
        let broken = tensors.iter().find_map(|(name, v, per)| {
            let values = v.get(row * per..(row + 1) * per)?;
            let n = values.iter().filter(|x| !x.is_finite()).count();
            (n > 0).then(|| format!("{n} of its {per} {name} values are NaN or infinite"))
        });
        match broken {
            Some(why) => bad.push((
                image.clone(),
                format!("{} row {row}: {why}", path.display()),
            )),
            None => good.push((image.clone(), *row)),
        }
    }
    (good, bad)
}
