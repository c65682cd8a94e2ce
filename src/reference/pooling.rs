use super::Reduced;
use crate::error::{Error, Result};
use crate::pooling::{ChannelPooling, LocalWindow, Normalization, Quantization, RegionPoolMode};
use crate::shape::Shape4;

/// Feature `f` of the local feature of unit (n, y, x): the window's (dy, dx, channel) entry,
/// zero outside the map.
fn local(x: &[f32], s: Shape4, win: LocalWindow, n: usize, y: usize, xx: usize, f: usize) -> f32 {
    let c = f % s.c;
    let d = f / s.c;
    let yy = (y + d / win.w) as isize - (win.h / 2) as isize;
    let xs = (xx + d % win.w) as isize - (win.w / 2) as isize;
    if yy < 0 || yy >= s.h as isize || xs < 0 || xs >= s.w as isize {
        return 0.0;
    }
    x[s.index(n, yy as usize, xs as usize, c)]
}

/// Cross-layer pooling `P = sum_i a_i x_i^T` over the units of each group of `group_images`
/// images (or, with [`ChannelPooling::Max`], `P[k][j] = max_i a_ik x_ij`): returns
/// `[groups][a_len][x_len]` with the magnitudes that bound its f32 error (for the maximum,
/// `|P|`: it is one product, exact in f64, rounded once).
#[allow(clippy::too_many_arguments)]
pub fn cross_layer(
    a: &[f32],
    a_shape: Shape4,
    a_win: LocalWindow,
    x: &[f32],
    x_shape: Shape4,
    x_win: LocalWindow,
    group_images: usize,
    mode: ChannelPooling,
) -> Result<Reduced> {
    if (a_shape.n, a_shape.h, a_shape.w) != (x_shape.n, x_shape.h, x_shape.w) {
        return Err(Error::shape(
            "cross_layer",
            format!("layers {a_shape} and {x_shape} have different grids"),
        ));
    }
    if group_images == 0 || !a_shape.n.is_multiple_of(group_images) {
        return Err(Error::shape(
            "cross_layer",
            format!(
                "{} images do not split into groups of {group_images}",
                a_shape.n
            ),
        ));
    }
    let (ka, kx) = (a_win.feature_len(a_shape.c), x_win.feature_len(x_shape.c));
    let groups = a_shape.n / group_images;
    let mut values = vec![0.0f32; groups * ka * kx];
    let mut magnitude = vec![0.0f32; groups * ka * kx];
    let mut acc = vec![0.0f64; ka * kx];
    let mut mag = vec![0.0f64; ka * kx];
    let mut av = vec![0.0f64; ka];
    let mut xv = vec![0.0f64; kx];
    let start = match mode {
        ChannelPooling::Sum => 0.0,
        ChannelPooling::Max => f64::NEG_INFINITY,
    };
    for g in 0..groups {
        acc.iter_mut().for_each(|v| *v = start);
        mag.iter_mut().for_each(|v| *v = 0.0);
        for n in g * group_images..(g + 1) * group_images {
            for y in 0..a_shape.h {
                for xx in 0..a_shape.w {
                    for (f, v) in av.iter_mut().enumerate() {
                        *v = local(a, a_shape, a_win, n, y, xx, f) as f64;
                    }
                    for (f, v) in xv.iter_mut().enumerate() {
                        *v = local(x, x_shape, x_win, n, y, xx, f) as f64;
                    }
                    for (k, &ak) in av.iter().enumerate() {
                        let row = &mut acc[k * kx..(k + 1) * kx];
                        if mode == ChannelPooling::Max {
                            // Every unit counts, zero products included.
                            for (r, &xj) in row.iter_mut().zip(&xv) {
                                *r = r.max(ak * xj);
                            }
                            continue;
                        }
                        if ak == 0.0 {
                            continue;
                        }
                        let mrow = &mut mag[k * kx..(k + 1) * kx];
                        for ((r, m), &xj) in row.iter_mut().zip(mrow.iter_mut()).zip(&xv) {
                            *r += ak * xj;
                            *m += (ak * xj).abs();
                        }
                    }
                }
            }
        }
        let out = g * ka * kx;
        for i in 0..ka * kx {
            values[out + i] = acc[i] as f32;
            magnitude[out + i] = match mode {
                ChannelPooling::Sum => mag[i] as f32,
                ChannelPooling::Max => acc[i].abs() as f32,
            };
        }
    }
    Ok(Reduced { values, magnitude })
}

/// Normalises `images` features of `[rows][cols]` in place, in f64: each row multiplied by
/// `1 / ||row||` (channel L2), then `sign(v) sqrt(|v|)`, then everything multiplied by
/// `1 / ||all||` (global L2). The global norm comes from each row's sums before the square
/// root ([`Normalization::transformed_sum_sq`]: the same value in exact arithmetic).
pub fn normalize(data: &mut [f32], rows: usize, cols: usize, norm: Normalization) {
    for img in data.chunks_mut(rows * cols) {
        let mut v: Vec<f64> = img.iter().map(|&x| x as f64).collect();
        let mut global_sq = 0.0f64;
        for row in v.chunks_mut(cols) {
            let sum_sq = crate::pooling::sum_of_squares(row);
            let r = norm.row_scale(sum_sq);
            global_sq += norm.transformed_sum_sq(r, sum_sq, crate::pooling::sum_of_abs(row));
            row.iter_mut().for_each(|x| *x *= r);
            if norm.signed_sqrt {
                row.iter_mut()
                    .for_each(|x| *x = x.signum() * x.abs().sqrt());
            }
        }
        let g = global_sq.sqrt();
        if norm.global_l2 && g > 0.0 {
            let q = 1.0 / g;
            v.iter_mut().for_each(|x| *x *= q);
        }
        for (o, x) in img.iter_mut().zip(&v) {
            // signum(0.0) is 1.0 in Rust; the sqrt of 0 keeps it 0 either way.
            *o = *x as f32;
        }
    }
}

/// Packs each row of `[rows][cols]` features, per `q`'s documented encoding. Packing has one
/// home, [`Quantization::pack`] (unit-tested against the documented bit layout), which the
/// library uses too; the GPU kernel is held to it here.
pub fn quantize(data: &[f32], cols: usize, q: Quantization) -> Vec<u32> {
    q.pack(data, cols)
}

/// The signed square root of the sum of each channel over each region `(y0, y1, x0, x1)`,
/// `[n][regions][c]` (an NHWC map when the regions are a later layer's units, row-major): the
/// local features FC-Conv pooling crosses with that layer. Also returns the sums and their
/// magnitudes (sums of |x|), which bound the f32 error before the square root.
pub fn field_pool(x: &[f32], s: Shape4, regions: &[[u32; 4]]) -> (Vec<f32>, Reduced) {
    let sums = region_pool(x, s, regions, RegionPoolMode::Sum);
    let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let magnitude = region_pool(&abs, s, regions, RegionPoolMode::Sum);
    let rooted = sums
        .iter()
        .map(|&v| ((v as f64).signum() * (v as f64).abs().sqrt()) as f32)
        .collect();
    (
        rooted,
        Reduced {
            values: sums,
            magnitude,
        },
    )
}

/// Sum or max of each channel over each region `(y0, y1, x0, x1)`: `[n][regions][c]`.
pub fn region_pool(x: &[f32], s: Shape4, regions: &[[u32; 4]], mode: RegionPoolMode) -> Vec<f32> {
    let mut out = Vec::with_capacity(s.n * regions.len() * s.c);
    for n in 0..s.n {
        for r in regions {
            for c in 0..s.c {
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
                out.push(acc as f32);
            }
        }
    }
    out
}
