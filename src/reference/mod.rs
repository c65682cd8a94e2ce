//! Plain CPU implementations of every GPU kernel: the oracle the tests hold the GPU to.
//!
//! They favour obviousness over speed: direct loops, f64 accumulation, no tiling.

mod backend;
pub mod compare;
mod conv;
mod features;
mod network;
mod pool;
mod pooling;
mod relu;

pub use backend::{CpuFeatures, CpuTensor, ReferenceBackend};
pub use conv::{conv2d, conv2d_add};
pub use features::{features, features_with_aconv};
pub use network::network_forward;
pub use pool::max_pool2d;
pub use pooling::{cross_layer, field_pool, normalize, quantize, region_pool};
pub use relu::relu;

/// Result of a reference reduction: the values and, per element, the magnitude
/// `sum |w_k * x_k| + |b|` against which the rounding error of an f32 evaluation is bounded.
#[derive(Clone, Debug)]
pub struct Reduced {
    /// Exact-to-f64 result rounded to f32.
    pub values: Vec<f32>,
    /// Sum of absolute terms, the scale of any f32 summation error.
    pub magnitude: Vec<f32>,
}

/// Worst-case relative error bound `gamma_n = n*u / (1 - n*u)` (u = 2^-24) of summing `n`
/// products in f32, in any order and with or without fused multiply-add (Higham, *Accuracy and
/// Stability of Numerical Algorithms*, 3.1): `|fl(sum) - sum| <= gamma_n * sum |terms|`.
///
/// Comparisons use this rather than a fixed epsilon because kernels differ in summation order
/// and lavapipe does not fuse `fma`; the bound is tight in the worst case and independent of both.
pub fn f32_dot_error_bound(n: usize) -> f32 {
    let u = f32::EPSILON as f64 / 2.0;
    let nu = n as f64 * u;
    (nu / (1.0 - nu)) as f32
}

/// The taps `(ky, kx, iy, ix)` of `win` at output unit `(oy, ox)` that fall inside an input of
/// `h` x `w` (padding contributes nothing), in row-major order.
fn window_taps(
    win: crate::shape::Window2d,
    (h, w): (usize, usize),
    (oy, ox): (usize, usize),
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let at = |o: usize, stride: usize, k: usize, pad: usize, len: usize| {
        (o * stride + k).checked_sub(pad).filter(|&i| i < len)
    };
    (0..win.kh).flat_map(move |ky| {
        let iy = at(oy, win.stride_h, ky, win.pad_h, h);
        (0..win.kw).filter_map(move |kx| {
            let ix = at(ox, win.stride_w, kx, win.pad_w, w);
            Some((ky, kx, iy?, ix?))
        })
    })
}
