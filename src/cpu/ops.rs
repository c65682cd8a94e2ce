//! The CPU backend's operations besides convolution, on all cores: max pooling (exact, equal
//! to the reference bit for bit), cross-layer pooling as a GEMM over unfolded local features,
//! region pooling and normalisation (f64 sums in the reference's order: equal to it).

use super::matmul::{matmul, Strided};
use super::tensor::check_lengths;
use crate::error::{Error, Result};
use crate::pooling::{ChannelPooling, LocalWindow, Normalization, RegionPoolMode};
use crate::shape::{MaxPool2dSpec, Shape4};
use rayon::prelude::*;

/// Max pooling of an NHWC `input` into `output`; padded positions never win. Returns the
/// output shape.
pub fn max_pool2d(
    input: &[f32],
    shape: Shape4,
    spec: MaxPool2dSpec,
    output: &mut [f32],
) -> Result<Shape4> {
    let out = spec.output_shape(shape)?;
    check_lengths("cpu max_pool2d", input, shape, output, out)?;
    let row = out.w * out.c;
    if row == 0 {
        return Ok(out);
    }
    output.par_chunks_mut(row).enumerate().for_each(|(r, dst)| {
        #[cfg(target_arch = "x86_64")]
        if super::Simd::Avx512.is_available() {
            // SAFETY: AVX-512F is available (checked).
            unsafe { pool_row_avx512(input, (shape, out), spec, r, dst) };
            return;
        }
        pool_row(input, (shape, out), spec, r, dst);
    });
    Ok(out)
}

/// Output row `r` (image and row) of a max pooling: the same code compiled for AVX-512F,
/// where `f32::max` becomes 16 lanes at once (the pass is bound by it, not by memory, on
/// the baseline's 4-lane SSE2): the same results bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool_row_avx512(
    input: &[f32],
    shapes: (Shape4, Shape4),
    spec: MaxPool2dSpec,
    r: usize,
    dst: &mut [f32],
) {
    pool_row(input, shapes, spec, r, dst)
}

/// Output row `r` of a max pooling of `input` (`shape`) into `dst` (`out.w * out.c` values).
#[inline(always)]
fn pool_row(
    input: &[f32],
    (shape, out): (Shape4, Shape4),
    spec: MaxPool2dSpec,
    r: usize,
    dst: &mut [f32],
) {
    let win = spec.window;
    let (n, oy) = (r / out.h, r % out.h);
    dst.fill(f32::NEG_INFINITY);
    for ky in 0..win.kh {
        let iy = (oy * win.stride_h + ky) as isize - win.pad_h as isize;
        if iy < 0 || iy >= shape.h as isize {
            continue;
        }
        for ox in 0..out.w {
            let o = &mut dst[ox * out.c..(ox + 1) * out.c];
            for kx in 0..win.kw {
                let ix = (ox * win.stride_w + kx) as isize - win.pad_w as isize;
                if ix < 0 || ix >= shape.w as isize {
                    continue;
                }
                let at = shape.index(n, iy as usize, ix as usize, 0);
                for (d, &v) in o.iter_mut().zip(&input[at..at + shape.c]) {
                    *d = d.max(v);
                }
            }
        }
    }
}

/// The local features of every unit of images `images`, one row each: unit (n, y, x) gets
/// the `win` neighbourhood of `x` centred on it, `(dy, dx, channel)` order, zero outside.
pub(super) fn unfold(
    x: &[f32],
    s: Shape4,
    win: LocalWindow,
    images: std::ops::Range<usize>,
) -> Vec<f32> {
    let len = win.feature_len(s.c);
    let units = images.len() * s.h * s.w;
    let mut rows = vec![0.0f32; units * len];
    if len == 0 {
        return rows;
    }
    rows.par_chunks_mut(len).enumerate().for_each(|(u, row)| {
        let n = images.start + u / (s.h * s.w);
        let (y, xx) = ((u / s.w) % s.h, u % s.w);
        for dy in 0..win.h {
            for dx in 0..win.w {
                let yy = (y + dy) as isize - (win.h / 2) as isize;
                let xs = (xx + dx) as isize - (win.w / 2) as isize;
                let tap = &mut row[(dy * win.w + dx) * s.c..][..s.c];
                if yy >= 0 && xs >= 0 && (yy as usize) < s.h && (xs as usize) < s.w {
                    let at = s.index(n, yy as usize, xs as usize, 0);
                    tap.copy_from_slice(&x[at..at + s.c]);
                }
            }
        }
    });
    rows
}

/// Cross-layer pooling `P = sum_i a_i x_i^T` over the units of each group of `group` images,
/// into `out` (`[groups][a_len][x_len]`); with [`ChannelPooling::Max`], the element-wise
/// maximum of `a_i x_i^T` (f32 products, whose maximum equals the reference's exactly: rounding
/// is monotonic). `a = None` pools with a constant 1 (a_len 1).
#[allow(clippy::too_many_arguments)]
pub fn cross_layer(
    a: Option<(&[f32], Shape4, LocalWindow)>,
    x: &[f32],
    x_shape: Shape4,
    x_win: LocalWindow,
    group: usize,
    mode: ChannelPooling,
    out: &mut [f32],
) -> Result<()> {
    let (ka, kx) = check_cross_layer(a, x_shape, x_win, group, out.len())?;
    let groups = x_shape.n / group;
    for (g, dst) in out.chunks_mut((ka * kx).max(1)).enumerate().take(groups) {
        let images = g * group..(g + 1) * group;
        let units = group * x_shape.h * x_shape.w;
        let xu = unfold(x, x_shape, x_win, images.clone());
        let au = match a {
            Some((av, s, w)) => unfold(av, s, w, images),
            None => vec![1.0; units],
        };
        if units == 0 {
            dst.fill(0.0);
            continue;
        }
        if mode == ChannelPooling::Max {
            max_outer_products(&au, ka, &xu, kx, dst);
            continue;
        }
        // dst[ka x kx] = au^T [ka x units] * xu [units x kx]; au (units x ka, row-major) is
        // read transposed through its strides.
        matmul(
            dst,
            (ka, kx, units),
            Strided {
                data: &au,
                row: 1,
                col: ka,
            },
            Strided {
                data: &xu,
                row: kx,
                col: 1,
            },
        );
    }
    Ok(())
}

/// The guide's and the local features' lengths `(ka, kx)` of a cross-layer pooling into
/// `out_len` values, or an error if the grids differ, `group` does not divide the images or
/// `out_len` is not `ka * kx` a group.
fn check_cross_layer(
    a: Option<(&[f32], Shape4, LocalWindow)>,
    x_shape: Shape4,
    x_win: LocalWindow,
    group: usize,
    out_len: usize,
) -> Result<(usize, usize)> {
    let bad = |why: String| Error::shape("cpu cross_layer", why);
    if let Some((_, s, _)) = a {
        if (s.n, s.h, s.w) != (x_shape.n, x_shape.h, x_shape.w) {
            return Err(bad(format!(
                "layers {s} and {x_shape} have different grids"
            )));
        }
    }
    if group == 0 || !x_shape.n.is_multiple_of(group) {
        return Err(bad(format!(
            "{} images do not split into groups of {group}",
            x_shape.n
        )));
    }
    let ka = a.map_or(1, |(_, s, w)| w.feature_len(s.c));
    let kx = x_win.feature_len(x_shape.c);
    let groups = x_shape.n / group;
    if out_len != groups * ka * kx {
        return Err(bad(format!(
            "{out_len} output values for {groups} x {ka} x {kx}"
        )));
    }
    Ok((ka, kx))
}

/// [`cross_layer`], then [`normalize`] of each output matrix by `norm`. Per-image sum pooling
/// with a guide, on AVX, runs as one pass that normalises each block of rows while it is in
/// cache (`fused_pooling`): the sums are within the same bound of the reference, and their
/// normalisation equals the reference's of these sums bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn cross_layer_normalized(
    a: Option<(&[f32], Shape4, LocalWindow)>,
    x: &[f32],
    x_shape: Shape4,
    x_win: LocalWindow,
    group: usize,
    mode: ChannelPooling,
    norm: Normalization,
    out: &mut [f32],
) -> Result<()> {
    let (ka, kx) = check_cross_layer(a, x_shape, x_win, group, out.len())?;
    #[cfg(target_arch = "x86_64")]
    if let (Some(a), 1, ChannelPooling::Sum, Some(simd)) = (a, group, mode, super::Simd::detected())
    {
        if x_shape.h * x_shape.w > 0 && a.0.len() == a.1.len() && x.len() == x_shape.len() {
            super::fused_pooling::pool_normalized(simd, a, (x, x_shape, x_win), norm, out);
            return Ok(());
        }
    }
    cross_layer(a, x, x_shape, x_win, group, mode, out)?;
    normalize(out, ka, kx, norm);
    Ok(())
}

/// `dst[k][j] = max over units u of a[u][k] * x[u][j]` (`a` is units x ka, `x` units x kx),
/// rows in parallel.
fn max_outer_products(a: &[f32], ka: usize, x: &[f32], kx: usize, dst: &mut [f32]) {
    if kx == 0 {
        return;
    }
    dst.par_chunks_mut(kx).enumerate().for_each(|(k, row)| {
        row.fill(f32::NEG_INFINITY);
        for (au, xu) in a.chunks_exact(ka).zip(x.chunks_exact(kx)) {
            let ak = au[k];
            for (r, &xj) in row.iter_mut().zip(xu) {
                *r = r.max(ak * xj);
            }
        }
    });
}

/// FC-Conv pooling's local features: `out[n][r][c]` = the signed square root of the sum of
/// `x` over region r (a later layer's receptive fields, so `out` is NHWC on its grid), summed
/// in f64 as the reference does.
pub fn field_pool(x: &[f32], s: Shape4, regions: &[[u32; 4]], out: &mut [f32]) -> Result<()> {
    region_pool(x, s, regions, RegionPoolMode::Sum, out)?;
    out.par_iter_mut()
        .for_each(|v| *v = ((*v as f64).signum() * (*v as f64).abs().sqrt()) as f32);
    Ok(())
}

/// Sum or max of each channel over each region `(y0, y1, x0, x1)`: `[n][regions][c]`, summed
/// in f64 in the reference's order.
pub fn region_pool(
    x: &[f32],
    s: Shape4,
    regions: &[[u32; 4]],
    mode: RegionPoolMode,
    out: &mut [f32],
) -> Result<()> {
    let per_image = regions.len() * s.c;
    if out.len() != s.n * per_image || x.len() != s.len() {
        return Err(Error::shape(
            "cpu region_pool",
            format!(
                "{} values for {s}, {} outputs for {} regions",
                x.len(),
                out.len(),
                regions.len()
            ),
        ));
    }
    if per_image == 0 {
        return Ok(());
    }
    out.par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(n, dst)| {
            for (r, row) in regions.iter().zip(dst.chunks_mut(s.c)) {
                for (c, o) in row.iter_mut().enumerate() {
                    let mut acc = match mode {
                        RegionPoolMode::Sum => 0.0f64,
                        RegionPoolMode::Max => f64::NEG_INFINITY,
                    };
                    for y in r[0] as usize..r[1] as usize {
                        for xx in r[2] as usize..r[3] as usize {
                            let v = x[s.index(n, y, xx, c)] as f64;
                            acc = match mode {
                                RegionPoolMode::Sum => acc + v,
                                RegionPoolMode::Max => acc.max(v),
                            };
                        }
                    }
                    *o = acc as f32;
                }
            }
        });
    Ok(())
}

/// Normalises each image's `[rows][cols]` features in place, in f64, as the reference does
/// (the same operations in the same order, so the results are equal). Images run in
/// parallel, and the rows of one image too when there are fewer images than threads.
///
/// A row's scale needs only its sum of squares, and the global norm only each row's sums
/// of squares and of absolute values ([`Normalization::transformed_sum_sq`]), so a value is
/// read, scaled, square-rooted and written once: one f64 square root each, no division and
/// no f64 copy of the image. Without global L2 that is one pass over the features.
pub fn normalize(data: &mut [f32], rows: usize, cols: usize, norm: Normalization) {
    if rows * cols == 0 {
        return;
    }
    let images = data.len() / (rows * cols);
    let rows_in_parallel = images < rayon::current_num_threads();
    data.par_chunks_mut(rows * cols).for_each(|img| {
        if !norm.global_l2 {
            // Each row's sums and its transform in one visit, while the row is in cache.
            let one = |row: &mut [f32]| {
                let (r, _) = row_sums(row, norm);
                transform_row(row, norm, r, 1.0);
            };
            if rows_in_parallel {
                img.par_chunks_mut(cols).for_each(one);
            } else {
                img.chunks_mut(cols).for_each(one);
            }
            return;
        }
        let sums = |row: &[f32]| row_sums(row, norm);
        // (scale, transformed sum of squares) per row.
        let scales: Vec<(f64, f64)> = if rows_in_parallel {
            img.par_chunks(cols).map(sums).collect()
        } else {
            img.chunks(cols).map(sums).collect()
        };
        let q = global_scale(&scales);
        let write = |(row, &(r, _)): (&mut [f32], &(f64, f64))| transform_row(row, norm, r, q);
        if rows_in_parallel {
            img.par_chunks_mut(cols).zip(&scales).for_each(write);
        } else {
            img.chunks_mut(cols).zip(&scales).for_each(write);
        }
    });
}

/// The global L2 scale of an image from each row's (scale, transformed sum of squares),
/// summed in row order as the reference sums.
pub(super) fn global_scale(rows: &[(f64, f64)]) -> f64 {
    let g = rows.iter().fold(0.0f64, |acc, &(_, sq)| acc + sq).sqrt();
    if g > 0.0 {
        1.0 / g
    } else {
        1.0
    }
}

/// A row's scale and its sum of squares after the scale and the signed square root.
/// Compiled for AVX-512F too, where the eight partial sums are one register (the same
/// additions in the same order: the reference's sums bit for bit).
pub(super) fn row_sums(row: &[f32], norm: Normalization) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if super::Simd::Avx512.is_available() {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide(row: &[f32], norm: Normalization) -> (f64, f64) {
            row_sums_in(row, norm)
        }
        // SAFETY: AVX-512F is available (checked).
        return unsafe { wide(row, norm) };
    }
    row_sums_in(row, norm)
}

#[inline(always)]
fn row_sums_in(row: &[f32], norm: Normalization) -> (f64, f64) {
    let sum_sq = crate::pooling::sum_of_squares(row);
    let r = norm.row_scale(sum_sq);
    let sum_abs = if norm.global_l2 && norm.signed_sqrt {
        crate::pooling::sum_of_abs(row)
    } else {
        0.0
    };
    (r, norm.transformed_sum_sq(r, sum_sq, sum_abs))
}

/// Writes `row` scaled by `r`, signed-square-rooted as `norm` asks, then scaled by `q`, in
/// f64. Compiled for AVX-512F too, where the f64 square root takes 8 lanes (the reference's
/// results bit for bit: the same IEEE operations in the same order).
pub(super) fn transform_row(row: &mut [f32], norm: Normalization, r: f64, q: f64) {
    #[cfg(target_arch = "x86_64")]
    if super::Simd::Avx512.is_available() {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide(row: &mut [f32], norm: Normalization, r: f64, q: f64) {
            transform_row_in(row, norm, r, q)
        }
        // SAFETY: AVX-512F is available (checked).
        return unsafe { wide(row, norm, r, q) };
    }
    transform_row_in(row, norm, r, q)
}

#[inline(always)]
fn transform_row_in(row: &mut [f32], norm: Normalization, r: f64, q: f64) {
    if norm.signed_sqrt {
        // sign(x) sqrt(|x|), as the reference's signum form gives it (0 and -0 kept).
        row.iter_mut().for_each(|o| {
            let x = *o as f64 * r;
            *o = (x.abs().sqrt().copysign(x) * q) as f32;
        });
    } else {
        row.iter_mut()
            .for_each(|o| *o = ((*o as f64 * r) * q) as f32);
    }
}
