//! A retrieval database: every image's feature (sign codes or floats), the mean activations
//! of layer t+1 that choose a query's channels, the image paths, and the extraction settings
//! (so that new query images can be extracted the same way).
//!
//! On disk an index is a directory:
//! - `index.safetensors`: `codes` `[n, rows, words]` (U32, see `pooling::Quantization`) or
//!   `features` `[n, rows, cols]` (F32, each image L2-normalised as a whole), and for
//!   cross-layer features `guide_mean` `[n, rows]` (F32); its metadata holds the extraction
//!   settings and `crosspool.index.*` keys;
//! - `images.jsonl`: the image paths, one JSON string a line, in row order.

use crate::error::{Error, Result};
use crate::output::write_atomic;
use crate::pooling::Quantization;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The `extract` settings the features were made with (`crosspool.*` keys).
    pub settings: BTreeMap<String, String>,
}

/// What building an index found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Shards read.
    pub shards: usize,
    /// Images in the index.
    pub images: usize,
    /// Images the extraction recorded as failed (not in the index).
    pub failed: usize,
}

fn bad_file(path: &Path, message: impl Into<String>) -> Error {
    Error::Weights {
        path: path.display().to_string(),
        message: message.into(),
    }
}

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

/// Extraction settings that must agree across the shards of one index.
fn run_settings(meta: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    meta.iter()
        .filter(|(k, _)| k.starts_with("crosspool.") && *k != "crosspool.layout")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn meta_usize(settings: &BTreeMap<String, String>, key: &str, origin: &Path) -> Result<usize> {
    settings
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            bad_file(
                origin,
                format!("metadata lacks {key} (written by an older crosspool? extract again)"),
            )
        })
}

/// Scales `v` to unit L2 norm (an all-zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
    if n > 0.0 {
        let inv = (1.0 / n) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// The `(path, row)` of every image a shard manifest records as done, and how many it
/// records as failed.
fn read_manifest(manifest: &Path) -> Result<(Vec<(String, usize)>, usize)> {
    let text = std::fs::read_to_string(manifest).map_err(Error::io(manifest))?;
    let (mut ok, mut failed) = (Vec::new(), 0);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::Config(format!("{}:{}: bad line ({e})", manifest.display(), n + 1))
        })?;
        let path = v.get("path").and_then(|p| p.as_str()).unwrap_or_default();
        match v.get("row").and_then(|r| r.as_u64()) {
            Some(r) if v.get("status").and_then(|s| s.as_str()) == Some("ok") => {
                ok.push((path.to_string(), r as usize))
            }
            _ => failed += 1,
        }
    }
    Ok((ok, failed))
}

/// The finished shard manifests of every part in `dir`, in name order.
fn manifests(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".jsonl"))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no finished feature shards (run crosspool extract --out {} first)",
            dir.display(),
            dir.display()
        )));
    }
    Ok(found)
}

/// The code format that extraction settings record, if the shards hold codes.
fn stored_codes(settings: &BTreeMap<String, String>) -> Option<Quantization> {
    match settings.get("crosspool.format").map(String::as_str) {
        Some("Sign2") => Some(Quantization::Sign2),
        Some("Bits1") => Some(Quantization::Bits1),
        _ => None,
    }
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
            IndexData::Codes { format, .. } => {
                crate::reference::quantize(&feature, self.cols, *format)
            }
            IndexData::Floats(_) => bytemuck::cast_vec(feature),
        }
    }

    /// Builds an index from the shards `crosspool extract` wrote to `dir` (every part).
    /// Float features are normalised to unit length per image and stored as `storage` says;
    /// stored codes are taken as they are (`Storage::Codes`, if given, must name their
    /// format).
    pub fn build(dir: &Path, storage: Storage) -> Result<(Self, BuildStats)> {
        let mut stats = BuildStats::default();
        let mut settings: Option<(BTreeMap<String, String>, PathBuf)> = None;
        let (mut rows, mut cols) = (0, 0);
        let mut binarize: Option<Quantization> = None;
        let mut words: Vec<u32> = Vec::new();
        let mut floats: Vec<f32> = Vec::new();
        let mut guide: Vec<f32> = Vec::new();
        let mut has_guide = None;
        let mut paths = Vec::new();
        for manifest in manifests(dir)? {
            let (ok_rows, failed) = read_manifest(&manifest)?;
            stats.failed += failed;
            let shard = manifest.with_extension("safetensors");
            let bytes = std::fs::read(&shard).map_err(Error::io(&shard))?;
            let (_, meta) =
                SafeTensors::read_metadata(&bytes).map_err(|e| bad_file(&shard, e.to_string()))?;
            let st =
                SafeTensors::deserialize(&bytes).map_err(|e| bad_file(&shard, e.to_string()))?;
            let these = run_settings(meta.metadata().as_ref().unwrap_or(&Default::default()));
            match &settings {
                None => {
                    rows = meta_usize(&these, "crosspool.feature_rows", &shard)?;
                    cols = meta_usize(&these, "crosspool.feature_cols", &shard)?;
                    let stored = stored_codes(&these);
                    binarize = match storage {
                        Storage::Codes(q) => {
                            if stored.is_some_and(|s| s != q) {
                                return Err(Error::Config(format!(
                                    "the features are stored as {stored:?} codes and cannot be re-coded as {q:?}; extract floats (--format f32) to choose"
                                )));
                            }
                            Some(q)
                        }
                        Storage::Floats => stored,
                        Storage::Auto => stored.or(
                            (these.get("crosspool.pooling").map(String::as_str)
                                == Some("cross-layer"))
                            .then_some(Quantization::Bits1),
                        ),
                    };
                    settings = Some((these, shard.clone()));
                }
                Some((first, from)) if *first != these => {
                    return Err(Error::Config(format!(
                        "{} and {} come from extractions with different settings; index them separately",
                        from.display(),
                        shard.display()
                    )))
                }
                _ => {}
            }
            let data = st.tensor("codes").or_else(|_| st.tensor("features"));
            let t = data.map_err(|_| bad_file(&shard, "holds neither codes nor features"))?;
            let shape = t.shape().to_vec();
            let per: usize = shape.iter().skip(1).product();
            if shape.len() != 3 || shape[1] != rows || shape[0] < ok_rows.len() {
                return Err(bad_file(
                    &shard,
                    format!(
                        "shape {shape:?} does not fit {} images of {rows} rows",
                        ok_rows.len()
                    ),
                ));
            }
            let row_range = |r: usize| r * per..(r + 1) * per;
            match (t.dtype(), binarize) {
                (Dtype::U32, Some(q)) => {
                    if shape[2] != q.words_per_row(cols) {
                        return Err(bad_file(
                            &shard,
                            format!("{} words per row for {cols} values", shape[2]),
                        ));
                    }
                    let all: Vec<u32> = bytemuck::pod_collect_to_vec(t.data());
                    for (_, r) in &ok_rows {
                        words.extend_from_slice(&all[row_range(*r)]);
                    }
                }
                (Dtype::F32 | Dtype::F16, _) => {
                    if shape[2] != cols {
                        return Err(bad_file(
                            &shard,
                            format!("{} values per row, expected {cols}", shape[2]),
                        ));
                    }
                    let all: Vec<f32> = if t.dtype() == Dtype::F32 {
                        bytemuck::pod_collect_to_vec(t.data())
                    } else {
                        bytemuck::pod_collect_to_vec::<u8, u16>(t.data())
                            .into_iter()
                            .map(|h| half::f16::from_bits(h).to_f32())
                            .collect()
                    };
                    let mut chosen: Vec<f32> = Vec::with_capacity(ok_rows.len() * per);
                    for (_, r) in &ok_rows {
                        chosen.extend_from_slice(&all[row_range(*r)]);
                    }
                    chosen.par_chunks_mut(per).for_each(l2_normalize);
                    match binarize {
                        Some(q) => {
                            let packed: Vec<Vec<u32>> = chosen
                                .par_chunks(per)
                                .map(|img| crate::reference::quantize(img, cols, q))
                                .collect();
                            words.extend(packed.into_iter().flatten());
                        }
                        None => floats.extend(chosen),
                    }
                }
                (other, _) => return Err(bad_file(&shard, format!("features of type {other:?}"))),
            }
            match st.tensor("guide_mean") {
                Ok(g) => {
                    if has_guide == Some(false)
                        || g.dtype() != Dtype::F32
                        || g.shape() != [shape[0], rows]
                    {
                        return Err(bad_file(
                            &shard,
                            "guide_mean does not match the other shards or the features",
                        ));
                    }
                    has_guide = Some(true);
                    let all: Vec<f32> = bytemuck::pod_collect_to_vec(g.data());
                    for (_, r) in &ok_rows {
                        guide.extend_from_slice(&all[r * rows..(r + 1) * rows]);
                    }
                }
                Err(_) => {
                    if has_guide == Some(true) {
                        return Err(bad_file(&shard, "has no guide_mean but other shards do"));
                    }
                    has_guide = Some(false);
                }
            }
            stats.shards += 1;
            stats.images += ok_rows.len();
            paths.extend(ok_rows.into_iter().map(|(p, _)| p));
        }
        let data = match binarize {
            Some(q) => IndexData::Codes {
                format: q,
                words_per_row: q.words_per_row(cols),
                words,
            },
            None => IndexData::Floats(floats),
        };
        let index = RetrievalIndex {
            rows,
            cols,
            data,
            guide_mean: (has_guide == Some(true)).then_some(guide),
            paths,
            settings: settings.map(|(s, _)| s).unwrap_or_default(),
        };
        Ok((index, stats))
    }

    /// Writes the index into directory `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let n = self.len();
        let mut meta: std::collections::HashMap<String, String> =
            self.settings.clone().into_iter().collect();
        meta.insert("crosspool.index.version".into(), "1".into());
        meta.insert("crosspool.index.rows".into(), self.rows.to_string());
        meta.insert("crosspool.index.cols".into(), self.cols.to_string());
        let (name, dtype, shape, bytes): (&str, Dtype, Vec<usize>, &[u8]) = match &self.data {
            IndexData::Codes {
                format,
                words_per_row,
                words,
            } => {
                meta.insert("crosspool.index.kind".into(), format!("{format:?}"));
                (
                    "codes",
                    Dtype::U32,
                    vec![n, self.rows, *words_per_row],
                    bytemuck::cast_slice(words),
                )
            }
            IndexData::Floats(v) => {
                meta.insert("crosspool.index.kind".into(), "F32".into());
                (
                    "features",
                    Dtype::F32,
                    vec![n, self.rows, self.cols],
                    bytemuck::cast_slice(v),
                )
            }
        };
        let path = dir.join("index.safetensors");
        let bad = |e: safetensors::SafeTensorError| bad_file(&path, e.to_string());
        let mut views = vec![(
            name,
            safetensors::tensor::TensorView::new(dtype, shape, bytes).map_err(bad)?,
        )];
        if let Some(g) = &self.guide_mean {
            views.push((
                "guide_mean",
                safetensors::tensor::TensorView::new(
                    Dtype::F32,
                    vec![n, self.rows],
                    bytemuck::cast_slice(g),
                )
                .map_err(bad)?,
            ));
        }
        let data = safetensors::serialize(views, Some(meta)).map_err(bad)?;
        write_atomic(&path, &data)?;
        let mut lines = String::new();
        for p in &self.paths {
            lines.push_str(&serde_json::Value::from(p.as_str()).to_string());
            lines.push('\n');
        }
        write_atomic(&dir.join("images.jsonl"), lines.as_bytes())
    }

    /// Reads an index written by [`RetrievalIndex::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("index.safetensors");
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| bad_file(&path, e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let settings: BTreeMap<String, String> = meta
            .iter()
            .filter(|(k, _)| !k.starts_with("crosspool.index."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let all: BTreeMap<String, String> = meta.into_iter().collect();
        if all.get("crosspool.index.version").map(String::as_str) != Some("1") {
            return Err(bad_file(&path, "not a crosspool index (version 1)"));
        }
        let rows = meta_usize(&all, "crosspool.index.rows", &path)?;
        let cols = meta_usize(&all, "crosspool.index.cols", &path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad_file(&path, e.to_string()))?;
        let list = dir.join("images.jsonl");
        let paths: Vec<String> = std::fs::read_to_string(&list)
            .map_err(Error::io(&list))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<String>(l)
                    .map_err(|e| bad_file(&list, format!("bad line ({e})")))
            })
            .collect::<Result<_>>()?;
        let n = paths.len();
        let data = match all.get("crosspool.index.kind").map(String::as_str) {
            Some(kind @ ("Bits1" | "Sign2")) => {
                let format = if kind == "Bits1" {
                    Quantization::Bits1
                } else {
                    Quantization::Sign2
                };
                let t = st
                    .tensor("codes")
                    .map_err(|_| bad_file(&path, "no codes tensor"))?;
                let wpr = format.words_per_row(cols);
                if t.dtype() != Dtype::U32 || t.shape() != [n, rows, wpr] {
                    return Err(bad_file(
                        &path,
                        format!(
                            "codes are {:?} {:?}, expected U32 [{n}, {rows}, {wpr}] for {n} images",
                            t.dtype(),
                            t.shape()
                        ),
                    ));
                }
                IndexData::Codes {
                    format,
                    words_per_row: wpr,
                    words: bytemuck::pod_collect_to_vec(t.data()),
                }
            }
            Some("F32") => {
                let t = st
                    .tensor("features")
                    .map_err(|_| bad_file(&path, "no features tensor"))?;
                if t.dtype() != Dtype::F32 || t.shape() != [n, rows, cols] {
                    return Err(bad_file(&path, format!("features are {:?} {:?}, expected F32 [{n}, {rows}, {cols}] for {n} images", t.dtype(), t.shape())));
                }
                IndexData::Floats(bytemuck::pod_collect_to_vec(t.data()))
            }
            other => return Err(bad_file(&path, format!("unknown index kind {other:?}"))),
        };
        let guide_mean = match st.tensor("guide_mean") {
            Ok(g) => {
                if g.dtype() != Dtype::F32 || g.shape() != [n, rows] {
                    return Err(bad_file(&path, "guide_mean does not match the features"));
                }
                Some(bytemuck::pod_collect_to_vec(g.data()))
            }
            Err(_) => None,
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
