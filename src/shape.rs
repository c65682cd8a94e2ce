//! Tensor shapes and sliding-window geometry shared by the CPU reference and the GPU kernels.
//!
//! Activations are stored NHWC (channels fastest): a run of image rows is then one contiguous
//! range of memory, which is what lets large activations be split into row bands that each fit a
//! storage binding, and makes each spatial unit's feature vector contiguous for pooling.

use crate::error::{Error, Result};

/// Shape of a batch of feature maps in NHWC order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape4 {
    /// Batch size.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl Shape4 {
    /// A shape from its four extents.
    pub const fn new(n: usize, h: usize, w: usize, c: usize) -> Self {
        Shape4 { n, h, w, c }
    }

    /// Number of elements.
    pub const fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    /// True if any extent is zero.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes when stored as f32.
    pub const fn bytes_f32(&self) -> u64 {
        self.len() as u64 * 4
    }

    /// Linear NHWC index of element (n, y, x, c).
    #[inline]
    pub const fn index(&self, n: usize, y: usize, x: usize, c: usize) -> usize {
        ((n * self.h + y) * self.w + x) * self.c + c
    }
}

impl Shape4 {
    /// An error unless an op's output tensor `want` has the shape it produces, `got`.
    pub fn check_output(op: &'static str, got: Shape4, want: Shape4) -> Result<()> {
        if got != want {
            return Err(Error::shape(
                op,
                format!("output tensor is {want} but the op produces {got}"),
            ));
        }
        Ok(())
    }

    /// An error unless `values`, the length of an op's input, is exactly this shape's.
    pub fn check_values(self, op: &'static str, values: usize) -> Result<()> {
        if values != self.len() {
            return Err(Error::shape(
                op,
                format!(
                    "input has {values} values but shape {self} needs {}",
                    self.len()
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Shape4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[n={}, h={}, w={}, c={}]",
            self.n, self.h, self.w, self.c
        )
    }
}

/// Sliding-window geometry (kernel, stride, zero/neg-inf padding), as in PyTorch with
/// dilation 1 and `ceil_mode=False`: `out = floor((in + 2*pad - k) / stride) + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window2d {
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Rows of padding above and below.
    pub pad_h: usize,
    /// Columns of padding left and right.
    pub pad_w: usize,
}

impl Window2d {
    /// A square window with equal stride and padding in both directions.
    pub const fn square(k: usize, stride: usize, pad: usize) -> Self {
        Window2d {
            kh: k,
            kw: k,
            stride_h: stride,
            stride_w: stride,
            pad_h: pad,
            pad_w: pad,
        }
    }

    /// Output height and width for an input of `h` x `w`, or an error naming `op`.
    pub fn output_hw(&self, op: &'static str, h: usize, w: usize) -> Result<(usize, usize)> {
        if self.kh == 0 || self.kw == 0 {
            return Err(Error::shape(op, "kernel size must be at least 1"));
        }
        if self.stride_h == 0 || self.stride_w == 0 {
            return Err(Error::shape(op, "stride must be at least 1"));
        }
        let ph = h + 2 * self.pad_h;
        let pw = w + 2 * self.pad_w;
        if ph < self.kh || pw < self.kw {
            return Err(Error::shape(
                op,
                format!(
                    "input {h}x{w} with padding {}x{} is smaller than the {}x{} kernel",
                    self.pad_h, self.pad_w, self.kh, self.kw
                ),
            ));
        }
        Ok((
            (ph - self.kh) / self.stride_h + 1,
            (pw - self.kw) / self.stride_w + 1,
        ))
    }

    /// Range of input rows (clamped to `[0, h)`) read by output row `oy`.
    #[inline]
    pub fn input_rows(&self, oy: usize, h: usize) -> (usize, usize) {
        let start = (oy * self.stride_h) as isize - self.pad_h as isize;
        let lo = start.clamp(0, h as isize) as usize;
        let hi = (start + self.kh as isize).clamp(0, h as isize) as usize;
        (lo, hi.max(lo))
    }
}

/// A 2-D convolution: geometry, channel counts and whether ReLU is fused after the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    /// Input channels.
    pub in_c: usize,
    /// Output channels.
    pub out_c: usize,
    /// Kernel, stride and zero padding.
    pub window: Window2d,
    /// Apply ReLU to the output.
    pub relu: bool,
}

impl Conv2dSpec {
    /// Output shape for `input`, checking that channel counts agree.
    pub fn output_shape(&self, input: Shape4) -> Result<Shape4> {
        if input.c != self.in_c {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "input has {} channels but the layer expects {}",
                    input.c, self.in_c
                ),
            ));
        }
        if self.out_c == 0 {
            return Err(Error::shape("conv2d", "output channels must be at least 1"));
        }
        let (oh, ow) = self.window.output_hw("conv2d", input.h, input.w)?;
        Ok(Shape4::new(input.n, oh, ow, self.out_c))
    }

    /// Length of the reduction (GEMM K): kh * kw * in_c.
    pub const fn k_total(&self) -> usize {
        self.window.kh * self.window.kw * self.in_c
    }

    /// Number of elements in the weight tensor.
    pub const fn weight_len(&self) -> usize {
        self.out_c * self.k_total()
    }

    /// Floating-point operations (multiply and add counted separately) for `input`.
    pub fn flops(&self, input: Shape4) -> Result<f64> {
        let out = self.output_shape(input)?;
        Ok(2.0 * out.len() as f64 * self.k_total() as f64)
    }
}

/// Max pooling geometry; padding counts as negative infinity, as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool2dSpec {
    /// Window, stride and padding.
    pub window: Window2d,
}

impl MaxPool2dSpec {
    /// Output shape for `input`; padding must be at most half the kernel, as PyTorch requires,
    /// so that every window sees at least one real element.
    pub fn output_shape(&self, input: Shape4) -> Result<Shape4> {
        let w = self.window;
        if 2 * w.pad_h > w.kh || 2 * w.pad_w > w.kw {
            return Err(Error::shape(
                "max_pool2d",
                format!(
                    "padding {}x{} exceeds half of the {}x{} kernel",
                    w.pad_h, w.pad_w, w.kh, w.kw
                ),
            ));
        }
        let (oh, ow) = w.output_hw("max_pool2d", input.h, input.w)?;
        Ok(Shape4::new(input.n, oh, ow, input.c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_matches_pytorch_floor_formula() {
        // AlexNet conv1 on 224: (224 + 4 - 11) / 4 + 1 = 55.
        assert_eq!(
            Window2d::square(11, 4, 2).output_hw("t", 224, 224).unwrap(),
            (55, 55)
        );
        // VGG pool on odd input: floor((7 - 2) / 2) + 1 = 3.
        assert_eq!(
            Window2d::square(2, 2, 0).output_hw("t", 7, 7).unwrap(),
            (3, 3)
        );
        assert!(Window2d::square(5, 1, 0).output_hw("t", 4, 9).is_err());
    }

    #[test]
    fn input_rows_are_clamped_to_the_image() {
        let w = Window2d::square(3, 1, 1);
        assert_eq!(w.input_rows(0, 5), (0, 2));
        assert_eq!(w.input_rows(4, 5), (3, 5));
        // A 1x1 kernel with padding 1 reads nothing on the border rows.
        let w = Window2d::square(1, 1, 1);
        assert_eq!(w.input_rows(0, 5), (0, 0));
        assert_eq!(w.input_rows(6, 5), (5, 5));
    }

    #[test]
    fn pool_rejects_padding_over_half_kernel() {
        let spec = MaxPool2dSpec {
            window: Window2d::square(2, 2, 2),
        };
        assert!(spec.output_shape(Shape4::new(1, 8, 8, 1)).is_err());
    }
}
