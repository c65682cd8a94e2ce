//! Host side of `shaders/score.wgsl`: a retrieval database resident on the GPU, and eq. 3
//! scores of query batches against it.

use crate::error::{Error, Result};
use crate::gpu::dispatch::{grid_for, record};
use crate::gpu::plan::plan_image_chunks;
use crate::gpu::tensor::{create_storage, download_f32, Scratch};
use crate::gpu::{Binding, GpuBuffer, GpuContext, Kernel};
use crate::pooling::Quantization;

use crate::gpu::shaders::{shader, wgsl_uniform, Shader};

/// Retrieval scores: popcounts of sign codes, or float dot products, over selected channels.
pub const SCORE: Shader = shader!("score.wgsl");

/// Threads per workgroup (images per workgroup).
pub const WORKGROUP: u32 = 64;

wgsl_uniform! {
    /// Uniform block of `score.wgsl`.
    pub struct ScoreParams in SCORE, test score_params_layout_matches_wgsl {
        images, rows, row_len, ksel, cols, out_stride, out_base, _pad,
    }
}

/// How rows are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreKind {
    /// Packed sign codes.
    Codes(Quantization),
    /// f32 rows.
    Floats,
}

/// A database in GPU buffers, split into runs of whole images that each fit one binding.
pub struct GpuDatabase {
    chunks: Vec<(GpuBuffer, usize, usize)>,
    /// Comparison.
    pub kind: ScoreKind,
    /// Images.
    pub images: usize,
    /// Rows per image.
    pub rows: usize,
    /// u32 words (codes) or f32 values per row.
    pub row_len: usize,
    /// Values per row before packing.
    pub cols: usize,
}

impl GpuDatabase {
    /// Uploads `data`, `[images][rows][row_len]` words (f32 bits for `Floats`).
    pub fn from_words(
        ctx: &GpuContext,
        kind: ScoreKind,
        rows: usize,
        row_len: usize,
        cols: usize,
        data: &[u32],
    ) -> Result<Self> {
        let per = rows * row_len;
        if per == 0 || !data.len().is_multiple_of(per) {
            return Err(Error::shape(
                "score database",
                format!(
                    "{} words are not whole images of {rows} x {row_len}",
                    data.len()
                ),
            ));
        }
        let images = data.len() / per;
        let limits = ctx.band_limits(0);
        let mut chunks = Vec::new();
        for (first, count) in plan_image_chunks(
            "score database",
            images,
            &[per as u64 * 4],
            limits,
            usize::MAX,
        )? {
            let words = &data[first * per..(first + count) * per];
            let buffer = create_storage(ctx, words.len() as u64 * 4, "retrieval database")?;
            ctx.queue
                .write_buffer(&buffer, 0, bytemuck::cast_slice(words));
            chunks.push((buffer, first, count));
        }
        Ok(GpuDatabase {
            chunks,
            kind,
            images,
            rows,
            row_len,
            cols,
        })
    }

    /// Bindings the database is split into.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

/// The compiled scoring pipelines, and the buffers for queries and scores that repeated
/// calls reuse.
pub struct ScoreKernel {
    bits1: Kernel,
    sign2: Kernel,
    floats: Kernel,
    queries: Scratch,
    selected: Scratch,
    scores: Scratch,
    /// Held for a whole call: the scratch buffers are written from the host before each
    /// submission, so two threads scoring at once must take turns.
    busy: std::sync::Mutex<()>,
}

impl ScoreKernel {
    /// Compiles the three entry points.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(ScoreKernel {
            bits1: ctx.kernel(&SCORE, "bits1")?,
            sign2: ctx.kernel(&SCORE, "sign2")?,
            floats: ctx.kernel(&SCORE, "floats")?,
            queries: Scratch::new("queries"),
            selected: Scratch::new("selected channels"),
            scores: Scratch::new("scores"),
            busy: std::sync::Mutex::new(()),
        })
    }

    /// Scores every query against every database image: `queries` is `[q][rows][row_len]`
    /// in the database's encoding, `selected` is `[q][ksel]` channel indices. Returns
    /// `[q][images]`.
    pub fn score(
        &self,
        ctx: &GpuContext,
        db: &GpuDatabase,
        queries: &[u32],
        selected: &[u32],
        ksel: usize,
    ) -> Result<Vec<f32>> {
        let per = db.rows * db.row_len;
        let nq = queries.len() / per.max(1);
        if queries.len() != nq * per || selected.len() != nq * ksel || ksel == 0 {
            return Err(Error::shape(
                "score",
                format!(
                    "{} query words and {} selections for {nq} queries of {} x {} and {ksel} channels",
                    queries.len(),
                    selected.len(),
                    db.rows,
                    db.row_len
                ),
            ));
        }
        if let Some(k) = selected.iter().find(|&&k| k as usize >= db.rows) {
            return Err(Error::shape(
                "score",
                format!("channel {k} selected, the database has {}", db.rows),
            ));
        }
        if matches!(db.kind, ScoreKind::Codes(_)) && ksel * db.cols >= 1 << 24 {
            return Err(Error::Config(format!(
                "{ksel} channels of {} values: code scores would pass 2^24 and lose exactness in f32; select fewer channels",
                db.cols
            )));
        }
        let pipeline = match db.kind {
            ScoreKind::Codes(Quantization::Bits1) => &self.bits1,
            ScoreKind::Codes(Quantization::Sign2) => &self.sign2,
            ScoreKind::Floats => &self.floats,
        };
        let mut out = Vec::with_capacity(nq * db.images);
        if db.images == 0 {
            return Ok(out);
        }
        let _turn = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        // Queries per pass: their scores, codes and selections must each fit one binding,
        // and a pass runs them along the z dimension of the grid.
        let cap = ctx.binding_cap() as usize;
        let block = (cap / (db.images * 4))
            .min(cap / (per * 4))
            .min(cap / (ksel * 4))
            .min(ctx.limits.max_compute_workgroups_per_dimension as usize)
            .max(1);
        if db.images * 4 > cap {
            return Err(Error::DeviceLimit {
                what: "score: the scores of one query".into(),
                needed: db.images as u64 * 4,
                limit: cap as u64,
                limit_name: "max_storage_buffer_binding_size",
                hint: "split the database into several indexes",
            });
        }
        for q0 in (0..nq).step_by(block) {
            let n = block.min(nq - q0);
            // Buffers sized for a whole block, so that every block binds the same ranges.
            let qbuf = self.queries.at_least(ctx, (block * per * 4) as u64)?;
            let sbuf = self.selected.at_least(ctx, (block * ksel * 4) as u64)?;
            let obuf = self.scores.at_least(ctx, (block * db.images * 4) as u64)?;
            ctx.queue.write_buffer(
                &qbuf,
                0,
                bytemuck::cast_slice(&queries[q0 * per..(q0 + n) * per]),
            );
            ctx.queue.write_buffer(
                &sbuf,
                0,
                bytemuck::cast_slice(&selected[q0 * ksel..(q0 + n) * ksel]),
            );
            ctx.submit("score", |enc| {
                for (buffer, first, count) in &db.chunks {
                    let params = ScoreParams {
                        images: *count as u32,
                        rows: db.rows as u32,
                        row_len: db.row_len as u32,
                        ksel: ksel as u32,
                        cols: db.cols as u32,
                        out_stride: db.images as u32,
                        out_base: *first as u32,
                        _pad: 0,
                    };
                    let (x, y, _) = grid_for(
                        (*count as u64).div_ceil(WORKGROUP as u64),
                        ctx.max_workgroups(),
                    );
                    record(
                        ctx,
                        enc,
                        pipeline,
                        &params,
                        &[
                            Binding::whole(buffer),
                            Binding::whole(&qbuf),
                            Binding::whole(&sbuf),
                            Binding::whole(&obuf),
                        ],
                        (x, y, n as u32),
                    );
                }
                Ok(())
            })?;
            out.extend(download_f32(ctx, &obuf, n * db.images)?);
        }
        Ok(out)
    }
}
