//! crosspool: cross-convolutional-layer pooling features from pretrained CNNs, computed with
//! hand-written WGSL compute shaders on any GPU wgpu reaches (Vulkan, Metal, DX12, GL), or on
//! software Vulkan where there is none.
//!
//! Layout: [`shape`] and [`weights`] describe layers; [`reference`] is the plain CPU oracle;
//! [`gpu`] holds device setup and one host module per WGSL kernel family in `shaders/`.

pub mod error;
pub mod extract;
pub mod features;
pub mod gpu;
pub mod input;
pub mod model;
pub mod output;
pub mod pca;
pub mod pooling;
pub mod reference;
pub mod retrieval;
pub mod shape;
pub mod weights;

pub use error::{Error, Result};

/// `(field name, byte offset)` of each listed field of a `#[repr(C)]` struct, for checking that
/// a Rust uniform block matches its WGSL counterpart.
#[doc(hidden)]
#[macro_export]
macro_rules! field_offsets {
    ($t:ty { $($f:ident),* $(,)? }) => {
        vec![$((stringify!($f).to_string(), std::mem::offset_of!($t, $f) as u32)),*]
    };
}
