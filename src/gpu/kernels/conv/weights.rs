//! A convolution layer's weights on the GPU: reordered to the kernels' `[K][n]` layout and
//! split by output channel into slices that each fit one storage binding.

use super::tile::BN;
use crate::error::{Error, Result};
use crate::gpu::tensor::{storage_from_f16, storage_from_slice, Dtype};
use crate::gpu::{GpuBuffer, GpuContext};
use crate::shape::Conv2dSpec;
use crate::weights::Conv2dWeights;

/// A convolution layer's weights on the GPU, in the kernel's `[K][n]` layout, split by output
/// channel into slices whose weights each fit one storage binding.
pub struct GpuConv2d {
    /// Geometry.
    pub spec: Conv2dSpec,
    /// How the weights are stored (the bias is f32 either way).
    pub dtype: Dtype,
    pub(super) slices: Vec<ChannelSlice>,
}

/// One slice of a layer's output channels: `n` from `c0`.
pub(super) struct ChannelSlice {
    pub(super) c0: usize,
    pub(super) n: usize,
    pub(super) weights: GpuBuffer,
    pub(super) bias: GpuBuffer,
}

impl GpuConv2d {
    /// Reorders and uploads `w` in f32.
    pub fn upload(ctx: &GpuContext, w: &Conv2dWeights) -> Result<Self> {
        Self::upload_as(ctx, w, Dtype::F32)
    }

    /// Reorders and uploads `w`, its weights stored as `dtype` (f16 rounds to nearest).
    pub fn upload_as(ctx: &GpuContext, w: &Conv2dWeights, dtype: Dtype) -> Result<Self> {
        if dtype == Dtype::F16 {
            ctx.require_f16("f16 convolution weights")?;
        }
        let s = w.spec;
        let column_bytes = s.k_total() as u64 * dtype.bytes();
        let fit = (ctx.binding_cap() / column_bytes) as usize;
        if fit == 0 {
            return Err(Error::DeviceLimit {
                what: format!(
                    "conv weights of one output channel ({}x{}x{})",
                    s.in_c, s.window.kh, s.window.kw
                ),
                needed: column_bytes,
                limit: ctx.binding_cap(),
                limit_name: "max_storage_buffer_binding_size",
                hint: "this layer is too large for this device",
            });
        }
        // Whole tiles per slice where possible, so that only the last slice has a ragged tile.
        let per_slice = if fit >= s.out_c {
            s.out_c
        } else if fit >= BN as usize {
            fit / BN as usize * BN as usize
        } else {
            fit
        };
        let mut slices = Vec::new();
        for c0 in (0..s.out_c).step_by(per_slice) {
            let n = per_slice.min(s.out_c - c0);
            slices.push(ChannelSlice {
                c0,
                n,
                weights: match dtype {
                    Dtype::F32 => storage_from_slice(ctx, &w.to_gemm_kn(c0, n), "conv weights")?,
                    Dtype::F16 => storage_from_f16(ctx, &w.to_gemm_kn(c0, n), "conv weights")?,
                },
                bias: storage_from_slice(ctx, &w.bias[c0..c0 + n], "conv bias")?,
            });
        }
        Ok(GpuConv2d {
            spec: s,
            dtype,
            slices,
        })
    }

    /// Number of output-channel slices the weights were split into.
    pub fn slices(&self) -> usize {
        self.slices.len()
    }
}
