//! Everything that touches the GPU: device setup, buffers, and the host side of each kernel.

mod checked;
mod context;
pub mod conv;
pub mod crosslayer;
mod dispatch;
pub mod extractor;
mod info;
pub mod moments;
pub mod network;
pub mod normalize;
pub mod plan;
pub mod pool;
pub mod quantize;
pub mod region_pool;
pub mod relu;
pub mod score;
pub mod shaders;
mod tensor;

pub use context::{BackendChoice, GpuContext, GpuOptions};
pub use conv::{Conv2dKernel, GpuConv2d};
pub use crosslayer::CrossLayerKernel;
pub use extractor::{ExtractWorkspace, Extractor};
pub use moments::MomentsGpu;
pub use network::{GpuNetwork, Workspace};
pub use normalize::NormalizeKernel;
pub use pool::MaxPool2dKernel;
pub use quantize::QuantizeKernel;
pub use region_pool::RegionPoolKernel;
pub use relu::ReluKernel;
pub use score::{GpuDatabase, ScoreKernel, ScoreKind};
pub use tensor::{GpuFeatures, GpuPacked, GpuTensor};
