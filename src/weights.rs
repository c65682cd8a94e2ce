//! Layer parameters held on the host, in PyTorch's layout.

use crate::error::{Error, Result};
use crate::shape::Conv2dSpec;

/// Weights and bias of one convolution, weight in PyTorch's OIHW order
/// (`[out_c][in_c][kh][kw]`), so tensors from torchvision checkpoints are used unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dWeights {
    /// Layer geometry.
    pub spec: Conv2dSpec,
    /// `out_c * in_c * kh * kw` values, OIHW.
    pub weight: Vec<f32>,
    /// `out_c` values.
    pub bias: Vec<f32>,
}

impl Conv2dWeights {
    /// Checks that `weight` and `bias` have the lengths `spec` implies.
    pub fn new(spec: Conv2dSpec, weight: Vec<f32>, bias: Vec<f32>) -> Result<Self> {
        if weight.len() != spec.weight_len() {
            return Err(Error::shape(
                "conv2d weights",
                format!(
                    "weight has {} values, expected {} = {}x{}x{}x{} (out, in, kh, kw)",
                    weight.len(),
                    spec.weight_len(),
                    spec.out_c,
                    spec.in_c,
                    spec.window.kh,
                    spec.window.kw
                ),
            ));
        }
        if bias.len() != spec.out_c {
            return Err(Error::shape(
                "conv2d weights",
                format!("bias has {} values, expected {}", bias.len(), spec.out_c),
            ));
        }
        Ok(Conv2dWeights { spec, weight, bias })
    }

    /// Weight `[out][in][ky][kx]`.
    #[inline]
    pub fn at(&self, o: usize, i: usize, ky: usize, kx: usize) -> f32 {
        let w = self.spec.window;
        self.weight[((o * self.spec.in_c + i) * w.kh + ky) * w.kw + kx]
    }

    /// Output channels `[c0, c0 + n)` of the weight as a row-major `[K][n]` matrix with
    /// `k = (ky * kw + kx) * in_c + i`: the GEMM B operand of the implicit-GEMM kernel, ordered
    /// so that consecutive k read consecutive channels of an NHWC activation.
    pub fn to_gemm_kn(&self, c0: usize, n: usize) -> Vec<f32> {
        let s = self.spec;
        let mut out = vec![0.0; s.k_total() * n];
        for o in 0..n {
            for ky in 0..s.window.kh {
                for kx in 0..s.window.kw {
                    for i in 0..s.in_c {
                        let k = (ky * s.window.kw + kx) * s.in_c + i;
                        out[k * n + o] = self.at(c0 + o, i, ky, kx);
                    }
                }
            }
        }
        out
    }
}
