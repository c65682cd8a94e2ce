//! The kernel entry points the pipelines are written against: [`Storage`] (tensors,
//! features, submission, reading back) and [`Backend`] (the operations). The GPU implements
//! them by recording dispatches into a command encoder (`impl Backend for GpuContext`); the
//! native CPU backend (`cpu::CpuBackend`) and the CPU reference
//! (`reference::ReferenceBackend`) compute at once in host memory, and share their storage
//! through [`super::HostMemory`]. Everything a pipeline allocates, runs or reads back goes through
//! here.

use crate::error::{Error, Result};
use crate::gpu::Dtype;
pub use crate::pooling::{CrossLayer, Guide};
use crate::pooling::{Normalization, Quantization, RegionPoolMode};
use crate::shape::{Conv2dSpec, MaxPool2dSpec, Shape4};
use crate::weights::Conv2dWeights;

/// Where a backend keeps activations and features, and how work is submitted and read back.
/// Backends in host memory (the native CPU backend and the reference) share one
/// implementation: see [`super::HostMemory`].
pub trait Storage {
    /// An NHWC f32 activation; clones are views of the same storage.
    type Tensor: Clone;
    /// Per-image matrices `[images][rows][cols]` of f32.
    type Features;
    /// Pooling regions, ready to use.
    type Regions;
    /// Storage that tensors of several shapes take turns in (the network's ping-pong).
    type Scratch;
    /// Where operations are recorded until [`Storage::submit`] runs them.
    type Recorder;
    /// Features packed into sign codes (see [`Op::Quantize`]).
    type Codes;

    /// A zeroed tensor.
    fn tensor(&self, shape: Shape4, label: &str) -> Result<Self::Tensor>;
    /// A tensor's shape.
    fn shape_of(t: &Self::Tensor) -> Shape4;
    /// Storage for `values` f32.
    fn scratch(&self, values: usize, label: &str) -> Result<Self::Scratch>;
    /// A tensor of `shape` living at the start of `s` (which must be large enough).
    fn view(s: &Self::Scratch, shape: Shape4) -> Self::Tensor;
    /// A tensor of `shape` stored as `dtype` at the start of `s`. Only backends whose
    /// [`Backend::conv_layer_as`] accepts f16 are asked for f16 views.
    fn view_as(s: &Self::Scratch, shape: Shape4, dtype: Dtype) -> Self::Tensor {
        debug_assert_eq!(dtype, Dtype::F32, "f16 view on an f32-only backend");
        Self::view(s, shape)
    }
    /// Zeroed features for `dims = (images, rows, cols)`: `images` matrices of `rows` x
    /// `cols` (as [`Storage::dims_of`] gives them back).
    fn features(&self, dims: (usize, usize, usize), label: &str) -> Result<Self::Features>;
    /// `(images, rows, cols)` of features.
    fn dims_of(f: &Self::Features) -> (usize, usize, usize);
    /// Regions `(y0, y1, x0, x1)` ready to pool over.
    fn regions(&self, boxes: &[[u32; 4]]) -> Result<Self::Regions>;
    /// Runs what `f` records, as one unit of work, and reports any error it raised.
    fn submit(
        &self,
        during: &str,
        f: &mut dyn FnMut(&mut Self::Recorder) -> Result<()>,
    ) -> Result<()>;
    /// Waits until everything submitted has finished.
    fn wait(&self, during: &str) -> Result<()>;
    /// Overwrites a tensor with `values` (exactly as many as its shape holds): the input.
    fn write(&self, t: &Self::Tensor, values: &[f32]) -> Result<()>;
    /// Reads features back, waiting for the work that writes them.
    fn download(&self, f: &Self::Features) -> Result<Vec<f32>>;
    /// Zeroed sign codes for features like `f` packed under `q`.
    fn codes(&self, f: &Self::Features, q: Quantization, label: &str) -> Result<Self::Codes>;
    /// Reads codes back, one vector of words per image, waiting for the work that writes
    /// them.
    fn download_codes(&self, c: &Self::Codes) -> Result<Vec<Vec<u32>>>;
}

/// A compute backend: its storage, and the operations on it.
pub trait Backend: Storage {
    /// A convolution layer's weights, ready to run.
    type Conv;
    /// Whatever the operations need prepared once (compiled kernels).
    type Kernels;

    /// Prepares the operations.
    fn kernels(&self) -> Result<Self::Kernels>;
    /// A convolution layer ready to run.
    fn conv_layer(&self, w: &Conv2dWeights) -> Result<Self::Conv>;
    /// A convolution layer whose weights (and the activations between such layers) are
    /// stored as `dtype`; backends without f16 storage refuse f16.
    fn conv_layer_as(&self, w: &Conv2dWeights, dtype: Dtype) -> Result<Self::Conv> {
        match dtype {
            Dtype::F32 => self.conv_layer(w),
            Dtype::F16 => Err(Error::Config(
                "f16 precision runs on a GPU with shader-f16; this backend computes in f32 (use --precision f32)".into(),
            )),
        }
    }
    /// Its geometry.
    fn conv_spec(c: &Self::Conv) -> Conv2dSpec;

    /// Records (on a device) or computes at once (in host memory) the operation `op`.
    fn run(&self, k: &Self::Kernels, r: &mut Self::Recorder, op: Op<'_, Self>) -> Result<()>
    where
        Self: Sized;
    /// [`Op::CrossLayer`] into `out`, then [`Op::Normalize`] of `out` by `norm`. A backend
    /// may run the two as one pass (the CPU backend normalises each block of rows while it is
    /// in cache); the results are the two operations'.
    fn cross_layer_normalized(
        &self,
        k: &Self::Kernels,
        r: &mut Self::Recorder,
        op: CrossLayer<'_, Self::Tensor>,
        out: &Self::Features,
        norm: Normalization,
    ) -> Result<()>
    where
        Self: Sized,
    {
        self.run(k, r, Op::CrossLayer(op, out))?;
        self.run(k, r, Op::Normalize(out, norm))
    }
    /// The kernel variant (tile) the last [`Op::Conv`] of `layer` on an input of `input`
    /// shape ran with, for reports; `None` where a backend has one kernel.
    fn conv_variant(&self, k: &Self::Kernels, layer: &Self::Conv, input: Shape4) -> Option<String> {
        let _ = (k, layer, input);
        None
    }
}

/// One operation a pipeline asks of a backend `B`, on `B`'s storage ([`Backend::run`]).
pub enum Op<'a, B: Backend> {
    /// `output = conv(input)` with the layer's bias and ReLU; with `shortcut` (a tensor of
    /// the output's shape, stored in f32), `output = relu(conv(input) + bias + shortcut)`,
    /// a residual block's addition in the same pass. With `overflow`
    /// (`[images][1][1]`, read as u32 bits), also sets image `i`'s flag when one of its
    /// outputs exceeds the layer's storage range; backends that store only f32 have nothing
    /// to flag.
    Conv {
        layer: &'a B::Conv,
        input: &'a B::Tensor,
        output: &'a B::Tensor,
        shortcut: Option<&'a B::Tensor>,
        overflow: Option<&'a B::Features>,
    },
    /// Zeroes the overflow flags before the recorded work that follows (backends whose
    /// convolutions never set one keep them zero from creation).
    ResetOverflow(&'a B::Features),
    /// `output = max_pool(input)`.
    MaxPool(MaxPool2dSpec, &'a B::Tensor, &'a B::Tensor),
    /// `out` = the cross-layer pooling (see [`CrossLayer`]).
    CrossLayer(CrossLayer<'a, B::Tensor>, &'a B::Features),
    /// `out[n][r][c]` = the sum or max of `x` over region `r`: `(x, regions, mode, out)`.
    RegionPool(
        &'a B::Tensor,
        &'a B::Regions,
        RegionPoolMode,
        &'a B::Features,
    ),
    /// FC-Conv pooling's local features, `(x, fields, out)`: `out[n][y][x][c]` = the signed
    /// square root of the sum of `x` over region `y * out.w + x` of `fields` (the receptive
    /// field of `out`'s unit).
    FieldPool(&'a B::Tensor, &'a B::Regions, &'a B::Tensor),
    /// Normalises every image of the features in place.
    Normalize(&'a B::Features, Normalization),
    /// Packs the features into sign codes (from [`Storage::codes`] for them and the
    /// quantisation).
    Quantize(&'a B::Features, Quantization, &'a B::Codes),
}

impl<'a, B: Backend> Op<'a, B> {
    /// `output = conv(input)`, without overflow flags.
    pub fn conv(layer: &'a B::Conv, input: &'a B::Tensor, output: &'a B::Tensor) -> Self {
        Op::Conv {
            layer,
            input,
            output,
            shortcut: None,
            overflow: None,
        }
    }
}
