//! The native CPU backend (issue 20), kernel by kernel: each runs on all cores and is held
//! to `reference` with the same f32 bounds as the GPU kernels. Imports only the leaf modules
//! (`error`, `shape`, `weights`), like `gpu`.

pub mod conv;

pub use conv::CpuConv2d;
