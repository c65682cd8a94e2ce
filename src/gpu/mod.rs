//! Everything that touches the GPU: device setup, buffers, the caches of compiled kernels and
//! bind groups, the band planner, and the host side of each kernel family in `shaders/`.
//!
//! This module knows tensors and kernel parameters only: it imports nothing but the crate's
//! leaf modules (`error`, `shape`, `weights`, `pooling`). Whole pipelines built from these
//! kernels (a network's forward pass, feature extraction, PCA moments) live in `pipeline`.

pub mod autotune;
mod buffer;
mod cache;
mod checked;
mod context;
pub mod conv;
pub mod crosslayer;
mod dispatch;
mod info;
pub mod normalize;
pub mod plan;
pub mod pool;
pub mod quantize;
pub mod region_pool;
pub mod relu;
pub mod score;
pub mod shaders;
mod tensor;

pub use buffer::{Binding, GpuBuffer};
pub use cache::{GpuCounters, Kernel};
pub use context::{AdapterSummary, BackendChoice, GpuContext, GpuOptions};
pub use conv::{Conv2dKernel, ConvTile, ConvTypes, GpuConv2d, F16_MAX};
pub use crosslayer::CrossLayerKernel;
pub use normalize::NormalizeKernel;
pub use pool::MaxPool2dKernel;
pub use quantize::QuantizeKernel;
pub use region_pool::{GpuRegions, RegionPoolKernel};
pub use relu::ReluKernel;
pub use score::{GpuDatabase, ScoreKernel, ScoreKind};
pub use tensor::{Dtype, GpuFeatures, GpuPacked, GpuTensor, Scratch};
