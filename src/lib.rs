//! crosspool: cross-convolutional-layer pooling features from pretrained CNNs, computed with
//! hand-written WGSL compute shaders on any GPU wgpu reaches (Vulkan, Metal, DX12, GL), or on
//! software Vulkan where there is none.
//!
//! Layout:
//! - leaves: [`error`]; [`shape`] and [`weights`] describe layers; [`pooling`] holds the
//!   pooling stage's options and the sign-code packing; [`tune`] chooses among any kernel's
//!   variants by timing;
//! - [`gpu`]: device setup, buffers, caches and one host module per WGSL kernel family in
//!   `shaders/`, depending on the leaves alone;
//! - [`model`], [`features`], [`pca`]: networks, what to compute from them, PCA;
//! - [`pipeline`]: whole computations (forward pass, extractor, PCA moments) from the kernels;
//! - [`input`], [`store`], [`extract`]: images in, the on-disk formats (shards written and
//!   read), and the streaming job that joins them; [`retrieval`] and [`classifier`] build on
//!   those;
//! - [`reference`]: the plain CPU oracle the tests hold every kernel against, and the
//!   comparisons under derived bounds; [`selftest`] holds the kernels to it on a user's
//!   adapter, and no other production module uses it.

pub mod choice;
pub mod classifier;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod extract;
pub mod features;
pub mod gpu;
pub mod input;
pub mod job;
pub mod model;
pub mod pca;
pub mod pipeline;
pub mod pooling;
pub mod reference;
pub mod retrieval;
pub mod selftest;
pub mod shape;
pub mod store;
pub mod tune;
pub mod weights;

pub use error::{Error, Result};
