//! Convolution on the CPU as a GEMM: bands of output pixels are unfolded (im2col) from the
//! NHWC input into rows of `kh * kw * in_c` values, ordered `(ky, kx, c)` so that each
//! kernel tap copies one contiguous run of channels, and multiplied by the layer's weights as
//! a `[(ky, kx, c)][out_c]` matrix with the `gemm` crate (runtime SIMD dispatch, rayon
//! threads); bias and ReLU follow on the band while it is in cache. The output rows are NHWC
//! pixels, so the product lands in place.

use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Shape4};
use crate::weights::Conv2dWeights;
use rayon::prelude::*;

/// Largest im2col band, in f32 values: 4 MiB, which keeps a band within a core's share of
/// the last-level cache while leaving thousands of rows for the GEMM to split.
const BAND_VALUES: usize = 1 << 20;

/// A convolution layer's weights laid out for the GEMM.
pub struct CpuConv2d {
    spec: Conv2dSpec,
    /// `[(ky * kw + kx) * in_c + c][out_c]`, row-major.
    weight_kn: Vec<f32>,
    bias: Vec<f32>,
}

impl CpuConv2d {
    /// Lays out `w` for [`CpuConv2d::run`].
    pub fn new(w: &Conv2dWeights) -> Self {
        CpuConv2d {
            spec: w.spec,
            weight_kn: w.to_gemm_kn(0, w.spec.out_c),
            bias: w.bias.clone(),
        }
    }

    /// The layer's geometry.
    pub fn spec(&self) -> Conv2dSpec {
        self.spec
    }

    /// `output = conv(input)` with bias (and ReLU if the layer has it), NHWC; returns the
    /// output shape. `output` must hold exactly that many values.
    pub fn run(&self, input: &[f32], shape: Shape4, output: &mut [f32]) -> Result<Shape4> {
        let out = self.spec.output_shape(shape)?;
        if input.len() != shape.len() || output.len() != out.len() {
            return Err(Error::shape(
                "cpu conv2d",
                format!(
                    "input has {} values for {shape} ({} needed), output {} for {out} ({} needed)",
                    input.len(),
                    shape.len(),
                    output.len(),
                    out.len()
                ),
            ));
        }
        let (k, n) = (self.spec.k_total(), self.spec.out_c);
        let pixels = out.n * out.h * out.w;
        if pixels == 0 || n == 0 {
            return Ok(out);
        }
        let band = (BAND_VALUES / k).clamp(1, pixels);
        let mut cols = vec![0.0f32; band * k];
        for (b, dst) in output.chunks_mut(band * n).enumerate() {
            let first = b * band;
            let rows = dst.len() / n;
            let cols = &mut cols[..rows * k];
            self.unfold(input, shape, out, first, cols);
            // SAFETY: `cols` is rows x k, `weight_kn` k x n and `dst` rows x n, all row-major
            // and contiguous, as the strides below say.
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    cols.as_ptr(),
                    1,
                    k as isize,
                    self.weight_kn.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(rayon::current_num_threads()),
                );
            }
            let relu = self.spec.relu;
            dst.par_chunks_mut(n).for_each(|px| {
                for (v, b) in px.iter_mut().zip(&self.bias) {
                    let y = *v + b;
                    *v = if relu { y.max(0.0) } else { y };
                }
            });
        }
        Ok(out)
    }

    /// Rows `first..first + rows` of the unfolded input: for output pixel p, the input values
    /// under the kernel at p, zero where the kernel hangs over the padding.
    fn unfold(&self, input: &[f32], shape: Shape4, out: Shape4, first: usize, cols: &mut [f32]) {
        let win = self.spec.window;
        let c = shape.c;
        let k = self.spec.k_total();
        cols.par_chunks_mut(k).enumerate().for_each(|(r, row)| {
            let p = first + r;
            let (img, rest) = (p / (out.h * out.w), p % (out.h * out.w));
            let (oy, ox) = (rest / out.w, rest % out.w);
            for ky in 0..win.kh {
                let iy = (oy * win.stride_h + ky) as isize - win.pad_h as isize;
                for kx in 0..win.kw {
                    let ix = (ox * win.stride_w + kx) as isize - win.pad_w as isize;
                    let tap = &mut row[(ky * win.kw + kx) * c..][..c];
                    if iy < 0 || ix < 0 || iy >= shape.h as isize || ix >= shape.w as isize {
                        tap.fill(0.0);
                    } else {
                        let at = shape.index(img, iy as usize, ix as usize, 0);
                        tap.copy_from_slice(&input[at..at + c]);
                    }
                }
            }
        });
    }
}
