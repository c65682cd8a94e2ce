//! `crosspool._crosspool`: the Python extension over the crosspool library, the same code the
//! command line runs. The Python package (`python/crosspool/`) wraps it in its public API.

use crosspool::choice::{parse_named, Choice};
use crosspool::engine::{check_fits, Device, Engine, FeatureDevice, Precision};
use crosspool::extract::{self, ExtractConfig};
use crosspool::features::{FeatureRequest, NormPreset, Pooling};
use crosspool::gpu::{BackendChoice, GpuOptions};
use crosspool::input::{DecodeMode, DecodeOptions, EncodedImage, ImageSource, RgbPixels};
use crosspool::job::{ExtractJob, ExtractOptions};
use crosspool::model::{Arch, Preprocess};
use crosspool::pooling::{ChannelPooling, LocalWindow};
use crosspool::retrieval::eval::load_ground_truth;
use crosspool::retrieval::score::rank;
use crosspool::retrieval::search::{channel_selection, evaluate, Scorer};
use crosspool::retrieval::RetrievalIndex;
use crosspool::store::writer::{OutputFormat, Row, RowData};
use crosspool::store::ExtractSettings;
use numpy::{PyArray, PyArrayMethods, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

create_exception!(
    _crosspool,
    CrosspoolError,
    PyException,
    "An error from crosspool, with the message the command line prints."
);

/// The library's error as the command line words it.
fn error(e: impl std::fmt::Display) -> PyErr {
    CrosspoolError::new_err(e.to_string())
}

/// `value` as the `flag`'s enum, by the names the command line accepts (in any case).
fn parse<T: Choice>(flag: &str, value: &str) -> PyResult<T> {
    parse_named(flag, value).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// What `extract` returns: features, guide means (or `None`), the item index of each
/// feature, and `(index, name, reason)` of each item that failed.
type Extracted<'py> = (
    Bound<'py, PyAny>,
    Option<Bound<'py, PyAny>>,
    Vec<usize>,
    Vec<(usize, String, String)>,
);

/// Features of a list of images, computed on a GPU or the CPU backend.
#[pyclass(module = "crosspool._crosspool")]
struct Extractor {
    pipeline: Box<dyn FeatureDevice>,
    preprocess: Preprocess,
    cfg: ExtractConfig,
    /// `[rows, values or words per row]` of each stored feature.
    row_shape: [usize; 2],
    /// Batches in flight (see `extract --in-flight`).
    in_flight: usize,
    /// The settings record of its features, as `extract.json` holds it (JSON).
    settings: String,
}

#[pymethods]
impl Extractor {
    #[new]
    #[pyo3(signature = (
        weights, *, model=None, layers=None, pooling="cross-layer", channel_pooling="sum",
        levels=0, window="1x1", size=224, decode="fast", pca=None, norm="paper",
        format="f32", batch=None, device="auto", adapter=None, backend=None, in_flight=None,
        precision="f32"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        weights: PathBuf,
        model: Option<&str>,
        layers: Option<Vec<String>>,
        pooling: &str,
        channel_pooling: &str,
        levels: u32,
        window: &str,
        size: u32,
        decode: &str,
        pca: Option<PathBuf>,
        norm: &str,
        format: &str,
        batch: Option<usize>,
        device: &str,
        adapter: Option<String>,
        backend: Option<&str>,
        in_flight: Option<usize>,
        precision: &str,
    ) -> PyResult<Self> {
        let precision: Precision = parse("precision", precision)?;
        let model: Option<Arch> = model.map(|m| parse("model", m)).transpose()?;
        let pooling: Pooling = parse("pooling", pooling)?;
        let channel_pooling: ChannelPooling = parse("channel_pooling", channel_pooling)?;
        let decode: DecodeMode = parse("decode", decode)?;
        let norm: NormPreset = parse("norm", norm)?;
        let format: OutputFormat = parse("format", format)?;
        let device: Device = parse("device", device)?;
        let window =
            LocalWindow::parse(window).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut opts = GpuOptions::from_env().map_err(error)?;
        if let Some(b) = backend {
            opts.backend = parse::<BackendChoice>("backend", b)?;
        }
        if adapter.is_some() {
            opts.adapter = adapter;
        }
        if batch == Some(0) {
            return Err(PyValueError::new_err("batch must be at least 1"));
        }
        if in_flight == Some(0) {
            return Err(PyValueError::new_err("in_flight must be at least 1"));
        }
        let job = ExtractJob::prepare(ExtractOptions {
            weights,
            model,
            features: FeatureRequest {
                layers: layers.unwrap_or_default(),
                pooling,
                channel_pooling,
                window,
                levels,
                norm,
            },
            size,
            pca,
            aconv: None,
        })
        .map_err(error)?;
        let mut engine = Engine::open(device, &opts).map_err(error)?;
        let storage = engine.apply_precision(precision).map_err(error)?;
        let products = engine.products();
        let batch = batch.unwrap_or_else(|| engine.default_batch(&job.weights, &job.spec, size));
        let limit = engine.memory_limit();
        check_fits(limit, &job.weights, &job.spec, size, None, batch).map_err(error)?;
        let pipeline = job.into_extractor(engine, storage).map_err(error)?;
        let (rows, cols) = pipeline.feature_shape(size as usize).map_err(error)?;
        // Refused here, not by an allocation that fails and aborts the interpreter.
        check_fits(
            limit,
            &job.weights,
            &job.spec,
            size,
            Some((rows, cols)),
            batch,
        )
        .map_err(error)?;
        let row_shape = [rows, format.stored_cols(cols)];
        let settings = job
            .settings((storage, products), decode, format, (rows, cols))
            .map_err(error)?
            .to_json();
        Ok(Extractor {
            settings,
            preprocess: job.weights.preprocess,
            cfg: ExtractConfig {
                size,
                batch,
                format,
                decode: DecodeOptions {
                    mode: decode,
                    ..DecodeOptions::default()
                },
            },
            row_shape,
            in_flight: in_flight.unwrap_or_else(|| pipeline.default_in_flight()),
            pipeline,
        })
    }

    /// The device in words.
    #[getter]
    fn device(&self) -> String {
        self.pipeline.describe()
    }

    /// `(rows, cols)` of each stored feature (cols in 32-bit words for sign codes).
    #[getter]
    fn feature_shape(&self) -> (usize, usize) {
        (self.row_shape[0], self.row_shape[1])
    }

    /// Images per batch.
    #[getter]
    fn batch(&self) -> usize {
        self.cfg.batch
    }

    /// How its features are computed and stored, as JSON: the record `extract` writes as
    /// `extract.json` (network, weights by path and content, layers, pooling, size, ...).
    #[getter]
    fn settings(&self) -> String {
        self.settings.clone()
    }

    /// The stored format's name (`f32`, `f16`, `sign2`, `bits1`).
    #[getter]
    fn format(&self) -> String {
        self.cfg.format.name().to_string()
    }

    /// Features of `items` (paths or HxWx3 uint8 arrays), computed with the GIL released.
    /// Returns `(features, guide_mean, indices, failures)`: features `[n_ok, rows, cols]` of
    /// the items read, in order; their layer t+1 means `[n_ok, rows]` (cross-layer) or
    /// `None`; the item index of each feature; `(index, name, reason)` for each item that
    /// failed. `progress(done, total)` is called after each batch.
    #[pyo3(signature = (items, progress=None))]
    fn extract<'py>(
        &self,
        py: Python<'py>,
        items: Vec<Bound<'py, PyAny>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Extracted<'py>> {
        let callback_error: Mutex<Option<PyErr>> = Mutex::new(None);
        let report_progress = |done: usize, _failed: usize, total: usize| {
            let Some(cb) = &progress else { return };
            Python::attach(|py| {
                if let Err(e) = cb.call1(py, (done, total)) {
                    let mut slot = callback_error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(e);
                }
            });
        };
        // An array of the wrong shape fails as its own item; anything that is neither a path
        // nor an array is a programming error, raised.
        let mut sources = Vec::with_capacity(items.len());
        let mut refused = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match source_of(i, item)? {
                Ok(s) => sources.push((i, s)),
                Err(reason) => refused.push((i, format!("<array {i}>"), reason)),
            }
        }
        let total = items.len();
        let (positions, sources): (Vec<usize>, Vec<ImageSource>) = sources.into_iter().unzip();
        let offset = refused.len();
        let report = |done: usize, failed: usize| report_progress(done + offset, failed, total);
        let rows: Vec<Row> = py
            .detach(|| -> crosspool::Result<Vec<Row>> {
                let mut runners = (0..self.in_flight)
                    .map(|_| self.pipeline.runner(&self.cfg))
                    .collect::<crosspool::Result<Vec<_>>>()?;
                extract::run_on_devices(
                    runners.iter_mut().map(|r| r.as_mut()).collect(),
                    self.preprocess,
                    sources,
                    Vec::new(),
                    &self.cfg,
                    &report,
                )
            })
            .map_err(error)?;
        if let Some(e) = callback_error
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
        {
            return Err(e);
        }
        self.arrays(py, rows, &positions, refused)
    }
}

impl Extractor {
    /// The rows of a run as numpy arrays, indices and failures.
    /// `positions`: each row's item index; `refused`: items that failed before the run.
    fn arrays<'py>(
        &self,
        py: Python<'py>,
        rows: Vec<Row>,
        positions: &[usize],
        refused: Vec<(usize, String, String)>,
    ) -> PyResult<Extracted<'py>> {
        let [r, c] = self.row_shape;
        let (mut floats, mut words, mut guide) = (Vec::new(), Vec::new(), Vec::new());
        let (mut indices, mut failures) = (Vec::new(), refused);
        let mut all_guided = true;
        for (&i, row) in positions.iter().zip(rows) {
            match row {
                Row::Ok {
                    values, guide_mean, ..
                } => {
                    match values {
                        RowData::F32(v) => floats.extend(v),
                        RowData::Words(w) => words.extend(w),
                    }
                    match guide_mean {
                        Some(g) => guide.extend(g),
                        None => all_guided = false,
                    }
                    indices.push(i);
                }
                Row::Failed { source, reason } => {
                    failures.push((i, source.name().display().to_string(), reason))
                }
            }
        }
        failures.sort_by_key(|f| f.0);
        let n = indices.len();
        let features = match self.cfg.format {
            OutputFormat::F32 => PyArray::from_vec(py, floats).reshape([n, r, c])?.into_any(),
            OutputFormat::F16 => {
                let halves: Vec<half::f16> = floats.into_iter().map(half::f16::from_f32).collect();
                PyArray::from_vec(py, halves).reshape([n, r, c])?.into_any()
            }
            OutputFormat::Sign2 | OutputFormat::Bits1 => {
                PyArray::from_vec(py, words).reshape([n, r, c])?.into_any()
            }
        };
        let guide = (all_guided && !guide.is_empty())
            .then(|| PyArray::from_vec(py, guide).reshape([n, r]))
            .transpose()?
            .map(Bound::into_any);
        Ok((features, guide, indices, failures))
    }
}

/// Item `i` of an `extract` list as an image source: an HxWx3 uint8 array, an image file's
/// bytes (`bytes`, `bytearray`), or a path. An array of another shape or type is
/// `Err(reason)`, to be recorded as that item's failure; an item that is none of these is a
/// `TypeError`.
fn source_of(i: usize, item: &Bound<'_, PyAny>) -> PyResult<Result<ImageSource, String>> {
    let bytes = if let Ok(b) = item.cast::<pyo3::types::PyBytes>() {
        Some(b.as_bytes().to_vec())
    } else if let Ok(b) = item.cast::<pyo3::types::PyByteArray>() {
        Some(b.to_vec())
    } else {
        None
    };
    if let Some(bytes) = bytes {
        return Ok(Ok(ImageSource::Encoded(std::sync::Arc::new(
            EncodedImage {
                name: format!("<bytes {i}>"),
                bytes,
            },
        ))));
    }
    if let Ok(a) = item.extract::<PyReadonlyArray3<'_, u8>>() {
        let shape = a.shape();
        if shape[2] != 3 || shape[0] == 0 || shape[1] == 0 {
            return Ok(Err(format!(
                "an array image must be height x width x 3 (RGB) uint8, not {shape:?}"
            )));
        }
        let (Ok(height), Ok(width)) = (u32::try_from(shape[0]), u32::try_from(shape[1])) else {
            return Ok(Err(format!("an array of shape {shape:?} is too large")));
        };
        // as_slice also accepts Fortran order, whose memory is not row-major.
        let rgb: Vec<u8> = match a.as_slice() {
            Ok(s) if a.is_c_contiguous() => s.to_vec(),
            _ => a.as_array().iter().copied().collect(),
        };
        return Ok(Ok(ImageSource::Pixels(std::sync::Arc::new(RgbPixels {
            name: format!("<array {i}>"),
            width,
            height,
            rgb,
        }))));
    }
    if item.hasattr("__array_interface__")? {
        let (shape, dtype) = (item.getattr("shape")?, item.getattr("dtype")?);
        return Ok(Err(format!(
            "an array image must be height x width x 3 (RGB) uint8, not {shape} {dtype}"
        )));
    }
    match item.extract::<PathBuf>() {
        Ok(p) => Ok(Ok(ImageSource::File(p))),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "item {i}: not a path, an image file's bytes or an HxWx3 uint8 array ({})",
            item.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))),
    }
}

/// Where a shard's tensors lie in its file, for memory-mapping: per tensor its name, dtype
/// (numpy's spelling), shape and byte offset; and the manifest's lines as JSON text.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn shard_layout(
    dir: PathBuf,
) -> PyResult<
    Vec<(
        String,
        Vec<(String, String, Vec<usize>, usize)>,
        Vec<String>,
    )>,
> {
    use crosspool::store::tensor_file::Element;
    let mut out = Vec::new();
    for shard in crosspool::store::shards::shard_layouts(&dir).map_err(error)? {
        let mut tensors = Vec::new();
        for (name, element, shape, offset) in shard.tensors {
            let dtype = match element {
                Element::F32 => "<f4",
                Element::F16 => "<f2",
                Element::U32 => "<u4",
                Element::BF16 | Element::Other => {
                    return Err(error(format!(
                        "feature shard {}: tensor {name} is not f32, f16 or u32",
                        shard.path.display()
                    )))
                }
            };
            tensors.push((name, dtype.to_string(), shape, offset));
        }
        let lines = shard
            .lines
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(l).map_err(error)?;
                v["name"] = serde_json::Value::String(l.name());
                Ok(v.to_string())
            })
            .collect::<PyResult<Vec<_>>>()?;
        out.push((shard.path.display().to_string(), tensors, lines));
    }
    Ok(out)
}

/// A retrieval index directory (from `crosspool index`), scored with eq. 3.
#[pyclass(module = "crosspool._crosspool")]
struct Index {
    index: RetrievalIndex,
    engine: Engine,
}

#[pymethods]
impl Index {
    #[new]
    #[pyo3(signature = (path, *, device="auto"))]
    fn new(path: PathBuf, device: &str) -> PyResult<Self> {
        let device: Device = parse("device", device)?;
        let index = RetrievalIndex::load(&path)
            .map_err(|e| error(format!("loading the index {}: {e}", path.display())))?;
        if index.is_empty() {
            return Err(error(format!(
                "the index {} holds no images",
                path.display()
            )));
        }
        let opts = GpuOptions::from_env().map_err(error)?;
        let engine = Engine::open(device, &opts).map_err(error)?;
        Ok(Index { index, engine })
    }

    /// Each image's name, in index order.
    #[getter]
    fn names(&self) -> Vec<String> {
        self.index.paths.clone()
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    /// The device in words.
    #[getter]
    fn device(&self) -> String {
        self.engine.describe()
    }

    /// The `top` images for each query feature (`[q, rows, cols]` f32, from an Extractor with
    /// the index's settings) and its layer t+1 means (`[q, rows]`, for channel selection):
    /// per query a list of `(index, score)`. `channels`: `None` for the default, `0` for all.
    #[pyo3(signature = (features, guide_mean=None, *, top=10, channels=None))]
    fn search(
        &self,
        py: Python<'_>,
        features: numpy::PyReadonlyArray3<'_, f32>,
        guide_mean: Option<numpy::PyReadonlyArray2<'_, f32>>,
        top: usize,
        channels: Option<usize>,
    ) -> PyResult<Vec<Vec<(usize, f32)>>> {
        let shape = features.shape();
        let (q, rows, cols) = (shape[0], shape[1], shape[2]);
        if (rows, cols) != (self.index.rows, self.index.cols) {
            return Err(error(format!(
                "the query features are {rows} x {cols}, the index {} x {}: the index was built from other settings",
                self.index.rows, self.index.cols
            )));
        }
        let values = features.as_array();
        let guide: Vec<Option<Vec<f32>>> = match &guide_mean {
            Some(g) => {
                let g = g.as_array();
                if g.shape() != [q, rows] {
                    return Err(PyValueError::new_err(format!(
                        "guide_mean must be {q} x {rows}, not {:?}",
                        g.shape()
                    )));
                }
                g.outer_iter().map(|r| Some(r.to_vec())).collect()
            }
            None => vec![None; q],
        };
        let mut codes = Vec::new();
        for k in 0..q {
            let v: Vec<f32> = values
                .slice(numpy::ndarray::s![k, .., ..])
                .iter()
                .copied()
                .collect();
            codes.extend(self.index.encode_query(v));
        }
        let channels = channels.map(|k| (k > 0).then_some(k));
        let (index, engine) = (&self.index, &self.engine);
        let scores = py
            .detach(|| -> crosspool::Result<Vec<f32>> {
                let (sel, ksel) = channel_selection(index, &guide, channels)?;
                Scorer::new(engine, index)?.score(&codes, &sel, ksel)
            })
            .map_err(error)?;
        let n = self.index.len();
        Ok((0..q)
            .map(|k| {
                let s = &scores[k * n..(k + 1) * n];
                rank(s, top, None).into_iter().map(|i| (i, s[i])).collect()
            })
            .collect())
    }

    /// mAP and recall@1 against a ground-truth file (see `crosspool eval`): a dict with `map`,
    /// `recall_at_1`, `channels`, `seconds` and `per_query` (name, ap, hit_at_1).
    #[pyo3(signature = (ground_truth, *, channels=None))]
    fn eval<'py>(
        &self,
        py: Python<'py>,
        ground_truth: PathBuf,
        channels: Option<usize>,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let truth = load_ground_truth(&ground_truth, &self.index.paths).map_err(error)?;
        let channels = channels.map(|k| (k > 0).then_some(k));
        let (index, engine) = (&self.index, &self.engine);
        let e = py
            .detach(|| {
                let scorer = Scorer::new(engine, index)?;
                evaluate(index, &truth, &scorer, channels)
            })
            .map_err(error)?;
        let d = pyo3::types::PyDict::new(py);
        d.set_item("map", e.map)?;
        d.set_item("recall_at_1", e.recall_at_1)?;
        d.set_item("channels", e.channels)?;
        d.set_item("seconds", e.seconds)?;
        let per: Vec<(String, f64, bool)> = e
            .per_query
            .into_iter()
            .map(|q| (q.name, q.ap, q.hit_at_1))
            .collect();
        d.set_item("per_query", per)?;
        Ok(d)
    }
}

/// Writes features computed elsewhere (a Ray dataset's rows) into an `extract` output
/// directory: the same shards, manifests and settings record, so that `crosspool index`,
/// `train-classifier` and `read_shards` read them as they read `extract`'s.
#[pyclass(module = "crosspool._crosspool")]
struct ShardWriter {
    /// `None` once finished.
    writer: Option<crosspool::store::writer::ShardWriter>,
    settings: ExtractSettings,
    dir: PathBuf,
}

#[pymethods]
impl ShardWriter {
    /// Opens `out` for the rows of features computed with `settings` (an Extractor's
    /// `settings`), in shards of `shard_rows` images; `part` `(i, n)` writes part `i` of an
    /// `n`-way split (as `extract --shard i/n`), so that `n` writers can fill one directory.
    /// A directory that already holds shards of this part is refused.
    #[new]
    #[pyo3(signature = (out, settings, *, shard_rows=1000, part=None))]
    fn new(
        out: PathBuf,
        settings: &str,
        shard_rows: usize,
        part: Option<(usize, usize)>,
    ) -> PyResult<Self> {
        if shard_rows == 0 {
            return Err(PyValueError::new_err("shard_rows must be at least 1"));
        }
        let prefix = match part {
            Some((i, n)) if n == 0 || i >= n => {
                return Err(PyValueError::new_err(format!(
                    "part must be (i, n) with 0 <= i < n, not ({i}, {n})"
                )))
            }
            Some((i, n)) => crosspool::store::shards::part_prefix(i, n),
            None => String::new(),
        };
        let settings =
            ExtractSettings::from_json(settings, "the features' settings").map_err(error)?;
        let (writer, _) = crosspool::store::writer::ShardWriter::open(
            &out, &prefix, &settings, shard_rows, false,
        )
        .map_err(error)?;
        Ok(ShardWriter {
            writer: Some(writer),
            settings,
            dir: out,
        })
    }

    /// `[rows, cols]` each row's features must have (cols in 32-bit words for sign codes).
    #[getter]
    fn feature_shape(&self) -> (usize, usize) {
        let s = &self.settings;
        (s.feature_rows, s.format.stored_cols(s.feature_cols))
    }

    /// Refuses features computed with other settings than the writer's (they would mix two
    /// kinds of features in one directory), naming what differs.
    fn check_settings(&self, settings: &str) -> PyResult<()> {
        let other = ExtractSettings::from_json(settings, "a row's settings").map_err(error)?;
        if !self.settings.same_run(&other) {
            return Err(error(format!(
                "rows computed with other settings than the first ones written to {} ({}): one directory holds one kind of features; write them to another directory",
                self.dir.display(),
                self.settings.differences(&other).join("; ")
            )));
        }
        Ok(())
    }

    /// Adds a batch of rows: `names[j]` names row `j`'s image; `features` `[n, rows, cols]`
    /// (f32 for f32 and f16 formats, uint32 words for sign codes); `guide_mean` `[n, rows]`
    /// for cross-layer features; `reasons[j]` says why row `j` has no feature (`None` when
    /// it has one: its features are then ignored); `labels[j]` its class, if any.
    #[pyo3(signature = (names, features, reasons, guide_mean=None, labels=None))]
    fn push(
        &mut self,
        names: Vec<String>,
        features: &Bound<'_, PyAny>,
        reasons: Vec<Option<String>>,
        guide_mean: Option<numpy::PyReadonlyArray2<'_, f32>>,
        labels: Option<Vec<Option<String>>>,
    ) -> PyResult<()> {
        let (rows, cols) = self.feature_shape();
        let n = names.len();
        let values: Vec<RowData> = if self.settings.format.codes().is_some() {
            let a = features
                .extract::<PyReadonlyArray3<'_, u32>>()
                .map_err(|_| {
                    PyValueError::new_err(format!(
                        "features of format {} must be a uint32 array",
                        self.settings.format.name()
                    ))
                })?;
            check_shape("features", a.shape(), &[n, rows, cols])?;
            let a = a.as_array();
            a.outer_iter()
                .map(|r| RowData::Words(r.iter().copied().collect()))
                .collect()
        } else {
            let a = features
                .extract::<PyReadonlyArray3<'_, f32>>()
                .map_err(|_| PyValueError::new_err("features must be a float32 array"))?;
            check_shape("features", a.shape(), &[n, rows, cols])?;
            let a = a.as_array();
            a.outer_iter()
                .map(|r| RowData::F32(r.iter().copied().collect()))
                .collect()
        };
        let guide: Option<Vec<Vec<f32>>> = match &guide_mean {
            Some(g) => {
                check_shape("guide_mean", g.shape(), &[n, rows])?;
                Some(g.as_array().outer_iter().map(|r| r.to_vec()).collect())
            }
            None => None,
        };
        if reasons.len() != n {
            return Err(PyValueError::new_err(format!(
                "{} reasons for {n} names",
                reasons.len()
            )));
        }
        let labels = labels.unwrap_or_else(|| vec![None; n]);
        if labels.len() != n {
            return Err(PyValueError::new_err(format!(
                "{} labels for {n} names",
                labels.len()
            )));
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| error("the writer is finished"))?;
        for (j, ((name, values), (reason, label))) in names
            .into_iter()
            .zip(values)
            .zip(reasons.into_iter().zip(labels))
            .enumerate()
        {
            let source = ImageSource::Encoded(std::sync::Arc::new(EncodedImage {
                name,
                bytes: Vec::new(),
            }));
            let row = match reason {
                Some(reason) => Row::Failed { source, reason },
                None => Row::Ok {
                    source,
                    values,
                    guide_mean: guide.as_ref().map(|g| g[j].clone()),
                },
            };
            writer.push_labelled(row, label).map_err(error)?;
        }
        Ok(())
    }

    /// Writes the rows pending and closes the part: `(images with features, failed, shards)`.
    fn finish(&mut self) -> PyResult<(usize, usize, usize)> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| error("the writer is finished"))?;
        let stats = writer.finish().map_err(error)?;
        Ok((stats.ok, stats.failed, stats.shards))
    }
}

/// Refuses an array whose shape is not `want`.
fn check_shape(what: &str, shape: &[usize], want: &[usize]) -> PyResult<()> {
    if shape != want {
        return Err(PyValueError::new_err(format!(
            "{what} must be {want:?}, not {shape:?}"
        )));
    }
    Ok(())
}

#[pymodule]
fn _crosspool(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CrosspoolError", m.py().get_type::<CrosspoolError>())?;
    m.add_class::<Extractor>()?;
    m.add_class::<Index>()?;
    m.add_class::<ShardWriter>()?;
    m.add_function(wrap_pyfunction!(shard_layout, m)?)?;
    Ok(())
}
