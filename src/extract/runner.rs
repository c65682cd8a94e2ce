//! Batches through a feature extractor on any [`Backend`]: one input tensor, workspace and
//! (for sign codes) packed output per batch size, kept for the whole run so that every batch
//! of a size binds the same buffers.

use super::{BatchRows, BatchRunner, ExtractConfig, F16_OVERFLOW};
use crate::error::Result;
use crate::pipeline::{Backend, ExtractWorkspace, Extractor};
use crate::pooling::Quantization;
use crate::shape::Shape4;
use crate::store::writer::RowData;
use std::collections::HashMap;

/// Computes batches with `extractor` on `backend`.
pub struct BackendRunner<'a, B: Backend> {
    backend: &'a B,
    extractor: &'a Extractor<B>,
    size: u32,
    quantize: Option<Quantization>,
    batches: HashMap<usize, BatchBuffers<B>>,
}

/// What batches of one size are computed in.
struct BatchBuffers<B: Backend> {
    input: B::Tensor,
    workspace: ExtractWorkspace<B>,
    codes: Option<B::Codes>,
}

impl<'a, B: Backend> BackendRunner<'a, B> {
    /// A runner for `cfg`'s image size and stored format.
    pub fn new(backend: &'a B, extractor: &'a Extractor<B>, cfg: &ExtractConfig) -> Self {
        BackendRunner {
            backend,
            extractor,
            size: cfg.size,
            quantize: cfg.format.codes(),
            batches: HashMap::new(),
        }
    }

    /// The buffers for a batch of `images`, made on first use.
    fn buffers(&mut self, images: usize) -> Result<&BatchBuffers<B>> {
        if !self.batches.contains_key(&images) {
            let (b, size) = (self.backend, self.size as usize);
            let shape = Shape4::new(images, size, size, 3);
            let workspace = self.extractor.workspace(b, shape)?;
            let codes = match self.quantize {
                Some(q) => Some(b.codes(workspace.features(), q, "packed features")?),
                None => None,
            };
            let buffers = BatchBuffers {
                input: b.tensor(shape, "images")?,
                workspace,
                codes,
            };
            self.batches.insert(images, buffers);
        }
        Ok(&self.batches[&images])
    }
}

impl<B: Backend> BatchRunner for BackendRunner<'_, B> {
    fn run(&mut self, images: &[&[f32]]) -> Result<BatchRows> {
        let (b, ex, quantize) = (self.backend, self.extractor, self.quantize);
        let buffers = self.buffers(images.len())?;
        let ws = &buffers.workspace;
        b.write(&buffers.input, &images.concat())?;
        let rows: Vec<RowData> = match (quantize, &buffers.codes) {
            (Some(q), Some(codes)) => {
                ex.extract_codes(b, &buffers.input, ws, q, codes)?;
                let words = b.download_codes(codes)?;
                words.into_iter().map(RowData::Words).collect()
            }
            _ => {
                let f = ex.extract(b, &buffers.input, ws)?;
                let (n, rows, cols) = B::dims_of(f);
                let values = b.download(f)?;
                values
                    .chunks((rows * cols).max(1))
                    .take(n)
                    .map(|c| RowData::F32(c.to_vec()))
                    .collect()
            }
        };
        let features = rows
            .into_iter()
            .zip(ws.overflowed(b)?)
            .map(|(row, over)| {
                if over {
                    Err(F16_OVERFLOW.to_string())
                } else {
                    Ok(row)
                }
            })
            .collect();
        Ok((features, guide_rows(ws.guide_means(b)?, images.len())))
    }
}

/// Splits the guide means of a batch of `images` (`[images][D_{t+1}]`) per image; none for
/// features without them.
fn guide_rows(means: Option<Vec<f32>>, images: usize) -> Vec<Vec<f32>> {
    match means {
        Some(g) => g.chunks(g.len() / images).map(<[f32]>::to_vec).collect(),
        None => Vec::new(),
    }
}
