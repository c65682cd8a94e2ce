//! Whole computations assembled from kernel entry points: a network's forward pass, the
//! feature extractor (forward, PCA projection, pooling, normalisation in one submission per
//! batch) and the PCA moments. They are written against [`Backend`], which the GPU
//! implements (`impl Backend for GpuContext`), the native CPU backend (`cpu::CpuBackend`)
//! and the CPU reference too (`reference::ReferenceBackend`); what to compute comes from `model`, `features` and `pca`.

pub mod backend;
mod cpu_backend;
pub mod extractor;
mod gpu_backend;
mod host;
pub mod maps;
pub mod moments;
pub mod network;

pub use backend::{Backend, CrossLayer, Guide, Op, Storage};
pub use extractor::{ExtractWorkspace, Extractor};
pub use gpu_backend::GpuKernels;
pub use host::HostMemory;
pub use maps::{DevicePreActivations, LayerMaps, LayerMapsWorkspace};
pub use moments::{Moments, MomentsGpu, MomentsWorkspace};
pub use network::{GpuNetwork, Network, Stage, Workspace};
