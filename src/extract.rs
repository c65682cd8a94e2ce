//! The streaming extraction pipeline: images are decoded and resized on a thread pool while
//! the GPU computes the previous batch and a writer thread stores the one before, so the GPU
//! does not wait on decoding or disk.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuPacked, GpuTensor, QuantizeKernel};
use crate::input::{failure_reason, prepare, DecodeOptions};
use crate::model::Preprocess;
use crate::output::{OutputFormat, Row, RowData, RowSink};
use crate::pipeline::{ExtractWorkspace, Extractor};
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

/// Runs `extractor` over `images`, handing every result to `writer` in input order (a
/// [`crate::output::ShardWriter`], or a `Vec<Row>` to keep them), finishes it and returns what
/// it gives back; calls `progress(done, failed)` after each batch.
pub fn run<W: RowSink>(
    ctx: &GpuContext,
    extractor: &Extractor,
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
    let quantize = match cfg.format {
        OutputFormat::Sign2 => Some(Quantization::Sign2),
        OutputFormat::Bits1 => Some(Quantization::Bits1),
        _ => None,
    };
    let qkernel = match quantize {
        Some(_) => Some(QuantizeKernel::new(ctx)?),
        None => None,
    };
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
        // GPU: this thread.
        let gpu_result = (|| -> Result<()> {
            let mut buffers: HashMap<usize, BatchBuffers> = HashMap::new();
            let coder = quantize.zip(qkernel.as_ref());
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
                    let b = match buffers.entry(ok.len()) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(BatchBuffers::new(ctx, extractor, ok.len(), size, coder)?)
                        }
                    };
                    b.run(ctx, extractor, &ok, coder)?
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
        let guide = match self.workspace.guide_means(ctx)? {
            Some(g) => g
                .chunks(g.len() / images.len())
                .map(<[f32]>::to_vec)
                .collect(),
            None => Vec::new(),
        };
        Ok((features, guide))
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
