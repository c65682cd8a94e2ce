//! Everything that touches the GPU: device setup, buffers, and the host side of each kernel.

mod checked;
mod context;
pub mod conv;
mod dispatch;
mod info;
pub mod network;
pub mod plan;
pub mod pool;
pub mod relu;
pub mod shaders;
mod tensor;

pub use context::{BackendChoice, GpuContext, GpuOptions};
pub use conv::{Conv2dKernel, GpuConv2d};
pub use network::{GpuNetwork, Workspace};
pub use pool::MaxPool2dKernel;
pub use relu::ReluKernel;
pub use tensor::GpuTensor;
