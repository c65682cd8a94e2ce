//! The native CPU backend (issue 20): host storage and kernels that run on all cores, each
//! held to `reference` with the same f32 bounds as the GPU kernels (Winograd with its own
//! derived one). Convolutions (`conv`) choose among Winograd (`winograd`) and direct
//! (`direct_conv`) convolution on register tiles (`microkernel`, AVX-512 or AVX2) and im2col
//! with the `gemm` crate; pooling, normalisation and the rest are in `ops`. Imports only the
//! leaf modules (`error`, `shape`, `weights`, `pooling`), like `gpu`; its `Backend`
//! implementation is in `pipeline`.

#[cfg(target_arch = "x86_64")]
mod amx;
pub mod conv;
#[cfg(target_arch = "x86_64")]
mod direct_conv;
#[cfg(target_arch = "x86_64")]
mod fused_pooling;
pub mod matmul;
#[cfg(target_arch = "x86_64")]
mod microkernel;
pub mod ops;
pub mod tensor;
#[cfg(target_arch = "x86_64")]
mod winograd;

pub use conv::{ConvKernel, CpuConv2d, Products, Simd};
pub use tensor::{HostCodes, HostFeatures, HostStorage, HostTensor};

/// The CPU backend: the pipelines run on these kernels when it is the `Backend`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend {
    /// The convolution kernel; `None`: the one `CROSSPOOL_CPU_CONV` picks (by default the
    /// fastest this CPU runs).
    conv: Option<ConvKernel>,
    /// What the convolutions multiply: bf16 runs the layers AMX suits on it.
    products: Products,
}

impl CpuBackend {
    /// The backend with the convolution kernel `CROSSPOOL_CPU_CONV` picks.
    pub const fn new() -> Self {
        CpuBackend {
            conv: None,
            products: Products::F32,
        }
    }

    /// The backend with convolutions on `kernel` (an error at the first layer if this CPU
    /// does not run it).
    pub const fn with_conv_kernel(kernel: ConvKernel) -> Self {
        CpuBackend {
            conv: Some(kernel),
            products: Products::F32,
        }
    }

    /// This backend with its convolutions multiplying `products`.
    pub const fn with_products(self, products: Products) -> Self {
        CpuBackend { products, ..self }
    }

    /// What its convolutions multiply.
    pub fn products(&self) -> Products {
        self.products
    }

    /// The convolution kernel layers are made for.
    pub fn conv_kernel(&self) -> crate::error::Result<ConvKernel> {
        match self.conv {
            Some(k) => Ok(k),
            None => ConvKernel::from_env(),
        }
    }
}
