//! The streaming extraction pipeline: images are decoded and resized on a thread pool while
//! the GPU computes the previous batch and a writer thread stores the one before, so the GPU
//! does not wait on decoding or disk.

use crate::error::{Error, Result};
use crate::gpu::{ExtractWorkspace, Extractor, GpuContext, GpuTensor, QuantizeKernel};
use crate::input::{decode_rgb, resize_rgb, DecodeLimits};
use crate::model::Preprocess;
use crate::output::{OutputFormat, Row, RowData, RowSink};
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
    /// Decoder limits.
    pub limits: DecodeLimits,
}

/// One decoded batch: per image, its path and its preprocessed pixels or why it failed.
struct Decoded {
    items: Vec<(String, std::result::Result<Vec<f32>, String>)>,
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
    let (size, limits) = (cfg.size, cfg.limits);
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
                        let r = decode_rgb(p, limits)
                            .and_then(|(w, h, rgb)| resize_rgb(w, h, rgb, size))
                            .map(|rgb| {
                                let mut v = Vec::new();
                                preprocess.apply(&rgb, &mut v);
                                v
                            })
                            .map_err(|e| match e {
                                Error::Image { reason, .. } => reason,
                                Error::Io { reason, .. } => reason.to_string(),
                                other => other.to_string(),
                            });
                        (p.display().to_string(), r)
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
            let mut workspaces: HashMap<usize, ExtractWorkspace> = HashMap::new();
            let (mut done, mut failed) = (0, 0);
            let per_image = (size * size * 3) as usize;
            for d in from_decode {
                let ok: Vec<usize> = (0..d.items.len())
                    .filter(|&i| d.items[i].1.is_ok())
                    .collect();
                let mut features: Vec<RowData> = Vec::new();
                let mut guide: Vec<Vec<f32>> = Vec::new();
                if !ok.is_empty() {
                    let shape = Shape4::new(ok.len(), size as usize, size as usize, 3);
                    let mut x = Vec::with_capacity(ok.len() * per_image);
                    for &i in &ok {
                        if let (_, Ok(v)) = &d.items[i] {
                            x.extend_from_slice(v);
                        }
                    }
                    let ws = match workspaces.entry(ok.len()) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(extractor.workspace(ctx, shape)?)
                        }
                    };
                    let gx = GpuTensor::upload(ctx, &x, shape, "images")?;
                    let f = extractor.extract(ctx, &gx, ws)?;
                    let per = f.len_per_image();
                    match (quantize, &qkernel) {
                        (Some(q), Some(k)) => {
                            let packed = k.output(ctx, f, q)?;
                            ctx.submit("quantize", |enc| k.record(ctx, enc, f, q, &packed))?;
                            let words = packed.download(ctx)?;
                            let wpi = packed.rows * packed.words_per_row;
                            features = words
                                .chunks(wpi)
                                .map(|c| RowData::Words(c.to_vec()))
                                .collect();
                        }
                        _ => {
                            let v = f.download(ctx)?;
                            features = v.chunks(per).map(|c| RowData::F32(c.to_vec())).collect();
                        }
                    }
                    if let Some(g) = ws.guide_means(ctx)? {
                        let per = g.len() / ok.len();
                        guide = g.chunks(per).map(|c| c.to_vec()).collect();
                    }
                }
                let mut feats = features.into_iter();
                let mut guide = guide.into_iter();
                let mut rows = Vec::with_capacity(d.items.len());
                for (path, r) in d.items {
                    rows.push(match r {
                        Ok(_) => Row::Ok {
                            path,
                            values: feats.next().expect("one feature per decoded image"),
                            guide_mean: guide.next(),
                        },
                        Err(reason) => {
                            failed += 1;
                            Row::Failed { path, reason }
                        }
                    });
                }
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
