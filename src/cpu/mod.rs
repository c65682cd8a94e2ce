//! The native CPU backend (issue 20): host storage and kernels that run on all cores, each
//! held to `reference` with the same f32 bounds as the GPU kernels. Imports only the leaf
//! modules (`error`, `shape`, `weights`, `pooling`), like `gpu`; its `Backend` implementation
//! is in `pipeline`.

pub mod conv;
pub mod ops;
pub mod tensor;

pub use conv::CpuConv2d;
pub use tensor::{HostFeatures, HostStorage, HostTensor};

/// The CPU backend: the pipelines run on these kernels when it is the `Backend`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;
