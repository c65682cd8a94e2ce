//! Everything that touches the GPU, in two rooms:
//! - `runtime/`: the device and its limits and features, buffers, the caches of compiled
//!   pipelines and bind groups, dispatch and submission, tensors, the band planner and the
//!   WGSL sources. It knows no particular kernel.
//! - `kernels/`: the host side of each kernel family in `shaders/` (convolution, in a folder
//!   of its own; pooling, ReLU, cross-layer pooling, normalisation, region pooling,
//!   quantisation, scoring), each built on the runtime.
//!
//! This module knows tensors and kernel parameters only: it imports nothing but the crate's
//! leaf modules (`error`, `shape`, `weights`, `pooling`, `tune`). Whole pipelines built from
//! these kernels (a network's forward pass, feature extraction, PCA moments) live in
//! `pipeline`.

mod kernels;
mod runtime;

pub use kernels::{conv, crosslayer, normalize, pool, quantize, region_pool, relu, score};
pub(crate) use runtime::{dispatch, tensor};
pub use runtime::{plan, shaders};

pub use conv::{Conv2dKernel, ConvTile, ConvTypes, GpuConv2d, F16_MAX};
pub use crosslayer::CrossLayerKernel;
pub use normalize::NormalizeKernel;
pub use pool::MaxPool2dKernel;
pub use quantize::QuantizeKernel;
pub use region_pool::{GpuRegions, RegionPoolKernel};
pub use relu::ReluKernel;
pub use runtime::buffer::{Binding, GpuBuffer};
pub use runtime::cache::{GpuCounters, Kernel};
pub use runtime::context::{AdapterSummary, BackendChoice, GpuContext, GpuOptions};
pub use runtime::tensor::{Dtype, GpuFeatures, GpuPacked, GpuTensor, Scratch};
pub use score::{GpuDatabase, ScoreKernel, ScoreKind};
