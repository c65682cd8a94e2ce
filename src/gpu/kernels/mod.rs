//! The kernel families, one module each (convolution a folder of its own): the host side of
//! the WGSL in `shaders/`, built on [`super::runtime`].

pub mod conv;
pub mod crosslayer;
pub mod normalize;
pub mod pool;
pub mod quantize;
pub mod region_pool;
pub mod relu;
pub mod score;
