//! The streaming extraction pipeline: images are decoded and resized on a thread pool while
//! the GPU computes the previous batch and a writer thread stores the one before, so the GPU
//! does not wait on decoding or disk.

use crate::cpu::{CpuBackend, HostTensor};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuPacked, GpuTensor, QuantizeKernel};
use crate::input::{failure_reason, prepare, DecodeOptions};
use crate::model::Preprocess;
use crate::output::{OutputFormat, Row, RowData, RowSink};
use crate::pipeline::{Backend, ExtractWorkspace, Extractor};
use crate::pooling::Quantization;
use crate::shape::Shape4;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

/// Settings of one extraction run.
#[derive(Clone, Debug)]
pub struct ExtractConfig {
    /// Images are resized to `size` x `size`.
    pub size: u32,
    /// Images per GPU batch.
    pub batch: usize,
    /// How values are stored.
    pub format: OutputFormat,
    /// Decoding mode and limits.
    pub decode: DecodeOptions,
}

/// One decoded batch: per image, its path and its preprocessed pixels or why it failed.
struct Decoded {
    items: Vec<(PathBuf, std::result::Result<Vec<f32>, String>)>,
}

/// Computes the features of one batch of preprocessed images on some device.
pub trait BatchRunner {
    /// Per image of `images` (preprocessed pixels, one slice each): its feature row (packed
    /// if the run stores codes) and, for cross-layer features, its layer t+1 channel means.
    fn run(&mut self, images: &[&[f32]]) -> Result<(Vec<RowData>, Vec<Vec<f32>>)>;
}

/// Runs `extractor` on the GPU over `images`, handing every result to `writer` in input
/// order (a [`crate::output::ShardWriter`], or a `Vec<Row>` to keep them), finishes it and
/// returns what it gives back; calls `progress(done, failed)` after each batch.
pub fn run<W: RowSink>(
    ctx: &GpuContext,
    extractor: &Extractor,
    preprocess: Preprocess,
    images: Vec<PathBuf>,
    writer: W,
    cfg: &ExtractConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<W::Done> {
    let mut runner = GpuRunner::new(ctx, extractor, cfg)?;
    run_on(&mut runner, preprocess, images, writer, cfg, progress)
}

/// [`run`] with the features computed by `runner` (the GPU's or the CPU backend's).
pub fn run_on<W: RowSink>(
    runner: &mut dyn BatchRunner,
    preprocess: Preprocess,
    images: Vec<PathBuf>,
    writer: W,
    cfg: &ExtractConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<W::Done> {
    let batch = cfg.batch.max(1);
    let (size, decode) = (cfg.size, cfg.decode);
    let (to_gpu, from_decode) = sync_channel::<Decoded>(2);
    let (to_writer, from_gpu) = sync_channel::<Vec<Row>>(2);
    std::thread::scope(|scope| -> Result<W::Done> {
        // Decoder: a batch at a time, its images in parallel; bounded channel = prefetch.
        scope.spawn(move || {
            for chunk in images.chunks(batch) {
                let items = chunk
                    .par_iter()
                    .map(|p| {
                        let r =
                            prepare(p, size, &preprocess, decode).map_err(|e| failure_reason(&e));
                        (p.clone(), r)
                    })
                    .collect();
                if to_gpu.send(Decoded { items }).is_err() {
                    break; // the GPU side stopped (error): stop decoding
                }
            }
        });
        // Writer.
        let writer_thread = scope.spawn(move || -> Result<W::Done> {
            let mut writer = writer;
            for rows in from_gpu {
                for r in rows {
                    writer.push(r)?;
                }
            }
            writer.finish()
        });
        // The device: this thread.
        let gpu_result = (|| -> Result<()> {
            let (mut done, mut failed) = (0, 0);
            for d in from_decode {
                let ok: Vec<&[f32]> = d
                    .items
                    .iter()
                    .filter_map(|(_, r)| r.as_deref().ok())
                    .collect();
                let (features, guide) = if ok.is_empty() {
                    (Vec::new(), Vec::new())
                } else {
                    runner.run(&ok)?
                };
                let rows = join_rows(d, features, guide, &mut failed);
                done += rows.len();
                if to_writer.send(rows).is_err() {
                    break; // the writer failed; its error is reported below
                }
                progress(done, failed);
            }
            Ok(())
        })();
        drop(to_writer);
        let written = writer_thread
            .join()
            .map_err(|_| Error::Config("the writer thread panicked".into()))?;
        gpu_result?;
        written
    })
}

/// Splits the guide means of a batch of `images` (`[images][D_{t+1}]`) per image; none for
/// features without them.
fn guide_rows(means: Option<Vec<f32>>, images: usize) -> Vec<Vec<f32>> {
    match means {
        Some(g) => g.chunks(g.len() / images).map(<[f32]>::to_vec).collect(),
        None => Vec::new(),
    }
}

/// Batches on the GPU: one set of buffers per batch size, kept for the whole run.
pub struct GpuRunner<'a> {
    ctx: &'a GpuContext,
    extractor: &'a Extractor,
    size: u32,
    coder: Option<(Quantization, QuantizeKernel)>,
    buffers: HashMap<usize, BatchBuffers>,
}

impl<'a> GpuRunner<'a> {
    /// A runner for `cfg`'s image size and stored format.
    pub fn new(ctx: &'a GpuContext, extractor: &'a Extractor, cfg: &ExtractConfig) -> Result<Self> {
        let coder = match cfg.format.codes() {
            Some(q) => Some((q, QuantizeKernel::new(ctx)?)),
            None => None,
        };
        Ok(GpuRunner {
            ctx,
            extractor,
            size: cfg.size,
            coder,
            buffers: HashMap::new(),
        })
    }
}

impl BatchRunner for GpuRunner<'_> {
    fn run(&mut self, images: &[&[f32]]) -> Result<(Vec<RowData>, Vec<Vec<f32>>)> {
        let coder = self.coder.as_ref().map(|(q, k)| (*q, k));
        let b = match self.buffers.entry(images.len()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(BatchBuffers::new(
                self.ctx,
                self.extractor,
                images.len(),
                self.size,
                coder,
            )?),
        };
        b.run(self.ctx, self.extractor, images, coder)
    }
}

/// Batches on the native CPU backend: one input tensor and workspace per batch size; sign
/// codes packed on the host ([`Quantization::pack`], which the GPU kernel is held to).
pub struct CpuRunner<'a> {
    cpu: &'a CpuBackend,
    extractor: &'a Extractor<CpuBackend>,
    size: u32,
    quantize: Option<Quantization>,
    buffers: HashMap<usize, (HostTensor, ExtractWorkspace<CpuBackend>)>,
}

impl<'a> CpuRunner<'a> {
    /// A runner for `cfg`'s image size and stored format, on the backend `extractor` was
    /// made with.
    pub fn new(
        cpu: &'a CpuBackend,
        extractor: &'a Extractor<CpuBackend>,
        cfg: &ExtractConfig,
    ) -> Self {
        CpuRunner {
            cpu,
            extractor,
            size: cfg.size,
            quantize: cfg.format.codes(),
            buffers: HashMap::new(),
        }
    }
}

impl BatchRunner for CpuRunner<'_> {
    fn run(&mut self, images: &[&[f32]]) -> Result<(Vec<RowData>, Vec<Vec<f32>>)> {
        let cpu = self.cpu;
        let shape = Shape4::new(images.len(), self.size as usize, self.size as usize, 3);
        let (input, ws) = match self.buffers.entry(images.len()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert((
                cpu.tensor(shape, "images")?,
                self.extractor.workspace(cpu, shape)?,
            )),
        };
        input.write(&images.concat())?;
        let f = self.extractor.extract(cpu, input, ws)?;
        let (n, rows, cols) = CpuBackend::dims_of(f);
        let values = cpu.download(f)?;
        let per_image = (rows * cols).max(1);
        let features = values
            .chunks(per_image)
            .take(n)
            .map(|c| match self.quantize {
                Some(q) => RowData::Words(q.pack(c, cols)),
                None => RowData::F32(c.to_vec()),
            })
            .collect();
        Ok((features, guide_rows(ws.guide_means(cpu)?, images.len())))
    }
}

/// The buffers for batches of one size, kept for the whole run so that every batch of that
/// size binds the same buffers (nothing is allocated or bound anew per batch).
struct BatchBuffers {
    input: GpuTensor,
    workspace: ExtractWorkspace,
    packed: Option<GpuPacked>,
}

impl BatchBuffers {
    fn new(
        ctx: &GpuContext,
        extractor: &Extractor,
        images: usize,
        size: u32,
        quantize: Option<(Quantization, &QuantizeKernel)>,
    ) -> Result<Self> {
        let shape = Shape4::new(images, size as usize, size as usize, 3);
        let workspace = extractor.workspace(ctx, shape)?;
        let packed = match quantize {
            Some((q, kernel)) => Some(kernel.output(ctx, workspace.features(), q)?),
            None => None,
        };
        Ok(BatchBuffers {
            input: GpuTensor::new(ctx, shape, "images")?,
            workspace,
            packed,
        })
    }

    /// Extracts the features of `images` (preprocessed pixels, one slice each): per image,
    /// its feature row and, for cross-layer features, its layer t+1 channel means.
    fn run(
        &self,
        ctx: &GpuContext,
        extractor: &Extractor,
        images: &[&[f32]],
        quantize: Option<(Quantization, &QuantizeKernel)>,
    ) -> Result<(Vec<RowData>, Vec<Vec<f32>>)> {
        self.input.write(ctx, &images.concat())?;
        let f = extractor.extract(ctx, &self.input, &self.workspace)?;
        let features = match (quantize, &self.packed) {
            (Some((q, kernel)), Some(packed)) => {
                ctx.submit("quantize", |enc| kernel.record(ctx, enc, f, q, packed))?;
                let words = packed.download(ctx)?;
                words
                    .chunks(packed.rows * packed.words_per_row)
                    .map(|c| RowData::Words(c.to_vec()))
                    .collect()
            }
            _ => f
                .download(ctx)?
                .chunks(f.len_per_image())
                .map(|c| RowData::F32(c.to_vec()))
                .collect(),
        };
        Ok((
            features,
            guide_rows(self.workspace.guide_means(ctx)?, images.len()),
        ))
    }
}

/// One row per image of the batch, in input order: the next feature for each decoded image,
/// the reason for each failed one (counted in `failed`).
fn join_rows(
    d: Decoded,
    features: Vec<RowData>,
    guide: Vec<Vec<f32>>,
    failed: &mut usize,
) -> Vec<Row> {
    let mut feats = features.into_iter();
    let mut guide = guide.into_iter();
    d.items
        .into_iter()
        .map(|(path, r)| match r {
            Ok(_) => Row::Ok {
                path,
                values: feats.next().expect("one feature per decoded image"),
                guide_mean: guide.next(),
            },
            Err(reason) => {
                *failed += 1;
                Row::Failed { path, reason }
            }
        })
        .collect()
}
