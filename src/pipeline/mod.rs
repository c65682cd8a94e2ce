//! Whole computations assembled from the GPU kernels: a network's forward pass, the feature
//! extractor (forward, PCA projection, pooling, normalisation in one submission per batch) and
//! the PCA moments. Kernels and their buffers come from `gpu`; what to compute comes from
//! `model`, `features` and `pca`.

pub mod extractor;
pub mod moments;
pub mod network;

pub use extractor::{ExtractWorkspace, Extractor};
pub use moments::{MomentsGpu, MomentsWorkspace};
pub use network::{GpuNetwork, Workspace};
