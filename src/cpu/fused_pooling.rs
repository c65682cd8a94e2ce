//! Cross-layer pooling and its normalisation in one pass, for per-image sum pooling: each
//! task computes a block of rows `P_k` on the register tiles (`microkernel`) and normalises
//! them while they are still in cache. Pooling and normalisation as two operations wrote the
//! features, read and wrote them again, each time through memory: ResNet's 2048 x 2048 an
//! image is 134 MB a batch of 8.
//!
//! The rows are the tiles' "pixels" (guide channels k, their `units` values contiguous after
//! a transpose) and the local features' columns its weight panels, so `P[k][j] = sum_u
//! a[u][k] x[u][j]` is one tile product over the window `u`. Normalisation is the same code
//! as [`super::ops::normalize`] on the same values, so it equals the reference's
//! normalisation of these sums bit for bit.

use super::microkernel::{self, Lanes, Simd, Tile, TileGeometry, MR, NR};
use super::ops::{global_scale, row_sums, transform_row, unfold};
use crate::pooling::{LocalWindow, Normalization};
use crate::shape::Shape4;
use rayon::prelude::*;

/// Rows a task computes and normalises while they are in cache: four tiles, 448 KiB for
/// ResNet's 2048 columns (a quarter of a 2 MiB L2 cache).
const ROWS_PER_TASK: usize = 4 * MR;

/// The tiles' bias: none.
static ZERO_BIAS: [Lanes; 2] = [Lanes([0.0; 16]); 2];

/// One image's operands laid out for the tiles.
struct Packed {
    /// The guide transposed, `[k][u]`, zero rows up to a whole tile.
    rows: Vec<f32>,
    /// The local features in panels of `NR` columns, `[panel][u][NR]`, zero past the last.
    panels: Vec<Lanes>,
}

/// Lays out image `n` of the guide `a` (`units` x `ka` once unfolded) and the local features
/// `x` (`units` x `kx`).
fn pack(
    (a, sa, aw): (&[f32], Shape4, LocalWindow),
    (x, sx, xw): (&[f32], Shape4, LocalWindow),
    n: usize,
) -> Packed {
    let (au, xu) = (unfold(a, sa, aw, n..n + 1), unfold(x, sx, xw, n..n + 1));
    let (ka, kx, units) = (aw.feature_len(sa.c), xw.feature_len(sx.c), sx.h * sx.w);
    let mut rows = vec![0.0f32; ka.div_ceil(MR) * MR * units];
    for (u, guide) in au.chunks_exact(ka).enumerate() {
        for (k, &v) in guide.iter().enumerate() {
            rows[k * units + u] = v;
        }
    }
    let count = kx.div_ceil(NR);
    let mut panels = vec![Lanes([0.0; 16]); count * units * 2];
    for (u, local) in xu.chunks_exact(kx).enumerate() {
        for (j, &v) in local.iter().enumerate() {
            let (p, c) = (j / NR, j % NR);
            panels[(p * units + u) * 2 + c / 16].0[c % 16] = v;
        }
    }
    Packed { rows, panels }
}

/// `out[n] = normalize(sum_u a_u x_u^T)` for each image n of the guide `a` and the local
/// features `x` (same grid, at least one unit), `out` holding `ka * kx` values an image.
pub(super) fn pool_normalized(
    simd: Simd,
    a: (&[f32], Shape4, LocalWindow),
    x: (&[f32], Shape4, LocalWindow),
    norm: Normalization,
    out: &mut [f32],
) {
    let (ka, kx) = (a.2.feature_len(a.1.c), x.2.feature_len(x.1.c));
    let units = x.1.h * x.1.w;
    if ka * kx == 0 {
        return;
    }
    let packed: Vec<Packed> = (0..x.1.n).into_par_iter().map(|n| pack(a, x, n)).collect();
    let geometry = TileGeometry {
        px_stride: units,
        row_stride: 0,
        kh: 1,
        window_row: units,
    };
    let images = out.par_chunks_mut(ka * kx).zip(&packed);
    images.for_each(|(img, p)| {
        // Each block's (scale, transformed sum of squares) per row, for the global norm.
        let scales: Vec<Vec<(f64, f64)>> = img
            .par_chunks_mut(ROWS_PER_TASK * kx)
            .enumerate()
            .map(|(b, block)| {
                let k0 = b * ROWS_PER_TASK;
                let rows = block.len() / kx;
                for t0 in (0..rows).step_by(MR) {
                    for panel in 0..kx.div_ceil(NR) {
                        // SAFETY: `simd` is available (the caller's check); the tile reads
                        // `MR` rows of `units` values (`rows` is padded to whole tiles) and
                        // one aligned panel, and writes its `pixels` rows of `cols` values
                        // inside this block.
                        unsafe {
                            microkernel::tile(
                                simd,
                                Tile {
                                    a: p.rows[(k0 + t0) * units..].as_ptr(),
                                    geometry,
                                    b: p.panels[panel * units * 2..].as_ptr() as *const f32,
                                    bias: ZERO_BIAS.as_ptr() as *const f32,
                                    relu: false,
                                    out: block[t0 * kx + panel * NR..].as_mut_ptr(),
                                    shortcut: std::ptr::null(),
                                    out_stride: kx,
                                    pixels: MR.min(rows - t0),
                                    cols: NR.min(kx - panel * NR),
                                },
                            )
                        };
                    }
                }
                block
                    .chunks_mut(kx)
                    .map(|row| {
                        let (r, sq) = row_sums(row, norm);
                        if !norm.global_l2 {
                            transform_row(row, norm, r, 1.0);
                        }
                        (r, sq)
                    })
                    .collect()
            })
            .collect();
        if norm.global_l2 {
            let scales: Vec<(f64, f64)> = scales.into_iter().flatten().collect();
            let q = global_scale(&scales);
            img.par_chunks_mut(kx)
                .zip(&scales)
                .for_each(|(row, &(r, _))| transform_row(row, norm, r, q));
        }
    });
}
