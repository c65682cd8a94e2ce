//! Host side of `shaders/conv2d.wgsl`: uploading layer weights and recording convolutions.

use super::dispatch::record;
use super::plan::{plan_row_bands, BandLimits, BindingWindow};
use super::tensor::{storage_from_slice, GpuTensor};
use super::{shaders, Binding, GpuBuffer, GpuContext, Kernel};
use crate::error::{Error, Result};
use crate::shape::Conv2dSpec;
use crate::weights::Conv2dWeights;

/// The workgroup tiles `conv2d.wgsl` (64 x 64, 4 x 4 per thread) and `conv2d_large.wgsl`
/// (128 x 128, 8 x 8 per thread) compute; both produce the same convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvTile {
    /// 64 x 64 outputs per workgroup, 16-deep slices.
    Small,
    /// 128 x 128 outputs per workgroup, 8-deep slices: more FMAs per load where the layer
    /// gives enough workgroups to fill the GPU.
    Large,
}

/// Workgroups the large tile must still give for a layer to use it on a GPU: two waves on
/// one of some 130 compute units (an H100 has 132). A guess to be replaced by timing (issue
/// 13's autotuning); `CROSSPOOL_CONV_TILE=small|large` forces one tile.
pub const LARGE_TILE_MIN_WORKGROUPS: u64 = 264;

/// [`LARGE_TILE_MIN_WORKGROUPS`] for `ctx`: on a software adapter (lavapipe), whose compute
/// units are the CPU's threads, four workgroups a thread (measured there: the large tile
/// doubles conv3_1 and conv4_1 from 6.8 and 6.4 to 13.3 and 12.0 GFLOP/s).
pub fn large_tile_min_workgroups(ctx: &GpuContext) -> u64 {
    if ctx.info.device_type == wgpu::DeviceType::Cpu {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        4 * threads as u64
    } else {
        LARGE_TILE_MIN_WORKGROUPS
    }
}

impl ConvTile {
    /// Output pixels and channels per workgroup.
    pub fn dims(self) -> (u32, u32) {
        match self {
            ConvTile::Small => (BM, BN),
            ConvTile::Large => (LARGE_BM, LARGE_BN),
        }
    }

    /// The tile for a GEMM of `m` output pixels by `n` output channels: large where it still
    /// gives `min_workgroups`, small otherwise.
    pub fn for_gemm(m: u64, n: u64, min_workgroups: u64) -> Self {
        let (bm, bn) = (LARGE_BM as u64, LARGE_BN as u64);
        if n >= bn && m.div_ceil(bm) * n.div_ceil(bn) >= min_workgroups {
            ConvTile::Large
        } else {
            ConvTile::Small
        }
    }

    /// The tile `CROSSPOOL_CONV_TILE` forces (`small`, `large`), or `None` for the choice
    /// per layer (unset or `auto`).
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var("CROSSPOOL_CONV_TILE").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(None),
            Ok("small") => Ok(Some(ConvTile::Small)),
            Ok("large") => Ok(Some(ConvTile::Large)),
            Ok(other) => Err(Error::Config(format!(
                "CROSSPOOL_CONV_TILE={other} is not one of auto, small, large"
            ))),
        }
    }
}

/// Output pixels per workgroup tile of the large kernel.
pub const LARGE_BM: u32 = 128;
/// Output channels per workgroup tile of the large kernel.
pub const LARGE_BN: u32 = 128;
/// Reduction depth per step of the large kernel.
pub const LARGE_BK: u32 = 8;
/// Output pixels per thread of the large kernel.
pub const LARGE_TM: u32 = 8;
/// Output channels per thread of the large kernel.
pub const LARGE_TN: u32 = 8;

/// Output pixels per workgroup tile (GEMM M).
pub const BM: u32 = 64;
/// Output channels per workgroup tile (GEMM N).
pub const BN: u32 = 64;
/// Reduction depth staged per step (GEMM K).
pub const BK: u32 = 16;
/// Threads per workgroup along x (`@workgroup_size(WG_X, WG_Y)` in the shader).
pub const WG_X: u32 = 16;
/// Threads per workgroup along y.
pub const WG_Y: u32 = 16;
/// Output pixels per thread.
pub const TM: u32 = 4;
/// Output channels per thread.
pub const TN: u32 = 4;
/// Threads per workgroup.
pub const THREADS: u32 = 256;

/// Uniform block of `conv2d.wgsl`; field order and types match the WGSL struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    in_h: u32,
    in_w: u32,
    in_c: u32,
    in_base: u32,
    out_h: u32,
    out_w: u32,
    out_c: u32,
    out_base: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    k_total: u32,
    relu: u32,
    out_row0: u32,
    out_rows: u32,
    in_row0: u32,
    out_stride: u32,
    out_c0: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

/// A convolution layer's weights on the GPU, in the kernel's `[K][n]` layout, split by output
/// channel into slices whose weights each fit one storage binding.
pub struct GpuConv2d {
    /// Geometry.
    pub spec: Conv2dSpec,
    slices: Vec<ChannelSlice>,
}

struct ChannelSlice {
    c0: usize,
    n: usize,
    weights: GpuBuffer,
    bias: GpuBuffer,
}

impl GpuConv2d {
    /// Reorders and uploads `w`.
    pub fn upload(ctx: &GpuContext, w: &Conv2dWeights) -> Result<Self> {
        let s = w.spec;
        let column_bytes = s.k_total() as u64 * 4;
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
                weights: storage_from_slice(ctx, &w.to_gemm_kn(c0, n), "conv weights")?,
                bias: storage_from_slice(ctx, &w.bias[c0..c0 + n], "conv bias")?,
            });
        }
        Ok(GpuConv2d { spec: s, slices })
    }

    /// Number of output-channel slices the weights were split into.
    pub fn slices(&self) -> usize {
        self.slices.len()
    }
}

/// The compiled convolution pipelines, one per tile; one per device, shared by all layers.
pub struct Conv2dKernel {
    small: Kernel,
    large: Kernel,
    /// A tile forced for every layer, else chosen per layer.
    forced: Option<ConvTile>,
    /// Workgroups a layer must give with the large tile to use it.
    min_large_workgroups: u64,
}

impl Conv2dKernel {
    /// Compiles the kernels; the tile is chosen per layer unless `CROSSPOOL_CONV_TILE`
    /// forces one.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::with_tile(ctx, ConvTile::from_env()?)
    }

    /// Compiles the kernels, with `tile` forced for every layer (`None`: chosen per layer).
    pub fn with_tile(ctx: &GpuContext, tile: Option<ConvTile>) -> Result<Self> {
        Ok(Conv2dKernel {
            small: ctx.kernel(&shaders::CONV2D, "main")?,
            large: ctx.kernel(&shaders::CONV2D_LARGE, "main")?,
            forced: tile,
            min_large_workgroups: large_tile_min_workgroups(ctx),
        })
    }

    /// The tile this kernel runs a layer producing `out` (one slice of `n` channels) with.
    pub fn tile_for(&self, out: crate::shape::Shape4, n: usize) -> ConvTile {
        self.forced.unwrap_or_else(|| {
            ConvTile::for_gemm(
                (out.n * out.h * out.w) as u64,
                n as u64,
                self.min_large_workgroups,
            )
        })
    }

    /// Records `output = conv(input)` into `enc`, split into row bands that fit the device's
    /// binding limit. `output` must have the layer's output shape.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        layer: &GpuConv2d,
        input: &GpuTensor,
        output: &GpuTensor,
    ) -> Result<()> {
        let spec = layer.spec;
        let out = spec.output_shape(input.shape)?;
        if out != output.shape {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "output tensor is {} but the layer produces {out}",
                    output.shape
                ),
            ));
        }
        if out.is_empty() {
            return Ok(());
        }
        let limits = BandLimits {
            binding_cap: ctx.binding_cap(),
            align: ctx.binding_alignment(),
            max_out_rows: (ctx.max_workgroups() as usize * BM as usize) / out.w,
        };
        let bands = plan_row_bands("conv2d", input.shape, out, &spec.window, limits)?;
        let in_row = (input.shape.w * input.shape.c) as u64;
        let out_row = (out.w * out.c) as u64;
        let w = spec.window;
        for band in bands {
            let iw = BindingWindow::new(
                band.in_row0 as u64 * in_row,
                band.in_rows as u64 * in_row,
                limits.align,
            );
            let ow = BindingWindow::new(
                band.out_row0 as u64 * out_row,
                band.out_rows as u64 * out_row,
                limits.align,
            );
            let m = (band.out_rows * out.w) as u32;
            for slice in &layer.slices {
                let tile = self.tile_for(out, slice.n);
                let (bm, bn) = tile.dims();
                let kernel = match tile {
                    ConvTile::Small => &self.small,
                    ConvTile::Large => &self.large,
                };
                let params = ConvParams {
                    in_h: input.shape.h as u32,
                    in_w: input.shape.w as u32,
                    in_c: input.shape.c as u32,
                    in_base: iw.base,
                    out_h: out.h as u32,
                    out_w: out.w as u32,
                    out_c: slice.n as u32,
                    out_base: ow.base,
                    kh: w.kh as u32,
                    kw: w.kw as u32,
                    stride_h: w.stride_h as u32,
                    stride_w: w.stride_w as u32,
                    pad_h: w.pad_h as u32,
                    pad_w: w.pad_w as u32,
                    k_total: spec.k_total() as u32,
                    relu: spec.relu as u32,
                    out_row0: band.out_row0 as u32,
                    out_rows: band.out_rows as u32,
                    in_row0: band.in_row0 as u32,
                    out_stride: out.c as u32,
                    out_c0: slice.c0 as u32,
                    _pad0: 0,
                    _pad1: 0,
                    _pad2: 0,
                };
                record(
                    ctx,
                    enc,
                    kernel,
                    &params,
                    &[
                        iw.bind(&input.buffer),
                        Binding::whole(&slice.weights),
                        Binding::whole(&slice.bias),
                        ow.bind(&output.buffer),
                    ],
                    (m.div_ceil(bm), (slice.n as u32).div_ceil(bn), 1),
                );
            }
        }
        Ok(())
    }

    /// Allocates the output, runs the convolution and submits it.
    pub fn run(&self, ctx: &GpuContext, layer: &GpuConv2d, input: &GpuTensor) -> Result<GpuTensor> {
        let output = GpuTensor::new(ctx, layer.spec.output_shape(input.shape)?, "conv output")?;
        ctx.submit("conv2d", |enc| self.record(ctx, enc, layer, input, &output))?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::shaders::tests::{wgsl_struct_layout, wgsl_u32_const};

    #[test]
    fn params_match_wgsl_struct() {
        let (members, size) = wgsl_struct_layout(&shaders::CONV2D, "ConvParams");
        assert_eq!(size as usize, std::mem::size_of::<ConvParams>());
        let rust = crate::field_offsets!(ConvParams {
            in_h,
            in_w,
            in_c,
            in_base,
            out_h,
            out_w,
            out_c,
            out_base,
            kh,
            kw,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
            k_total,
            relu,
            out_row0,
            out_rows,
            in_row0,
            out_stride,
            out_c0,
            _pad0,
            _pad1,
            _pad2
        });
        assert_eq!(members, rust);
    }

    #[test]
    fn large_tile_constants_match_wgsl() {
        let large = &shaders::CONV2D_LARGE;
        for (name, v) in [
            ("BM", LARGE_BM),
            ("BN", LARGE_BN),
            ("BK", LARGE_BK),
            ("TM", LARGE_TM),
            ("TN", LARGE_TN),
            ("THREADS", THREADS),
            ("WG_X", WG_X),
            ("WG_Y", WG_Y),
        ] {
            assert_eq!(wgsl_u32_const(large, name), v, "{name}");
        }
        // 16 x 16 threads, an 8 x 8 block each, 4 A and 4 B loads per slice each.
        assert_eq!(LARGE_BM, 16 * LARGE_TM);
        assert_eq!(LARGE_BN, 16 * LARGE_TN);
        assert_eq!(LARGE_BM * LARGE_BK, 4 * THREADS);
        assert_eq!(LARGE_BN * LARGE_BK, 4 * THREADS);
        assert_eq!(wgsl_u32_const(large, "A_ROW"), LARGE_BM / 4 + 1);
        assert_eq!(wgsl_u32_const(large, "B_ROW"), LARGE_BN / 4);
        let (members, size) = wgsl_struct_layout(large, "ConvParams");
        assert_eq!(
            (members, size),
            wgsl_struct_layout(&shaders::CONV2D, "ConvParams")
        );
    }

    #[test]
    fn the_large_tile_is_chosen_where_it_fills_the_gpu() {
        // VGG16 at 224: conv3_1 at batch 8 (M = 8 * 56 * 56, N = 256) gives 392 large tiles.
        let gpu = LARGE_TILE_MIN_WORKGROUPS;
        assert_eq!(ConvTile::for_gemm(8 * 56 * 56, 256, gpu), ConvTile::Large);
        // conv5 at batch 8 (M = 8 * 14 * 14, N = 512) would give 52: small tiles.
        assert_eq!(ConvTile::for_gemm(8 * 14 * 14, 512, gpu), ConvTile::Small);
        // ... except where the compute units are few (a CPU's threads).
        assert_eq!(ConvTile::for_gemm(8 * 14 * 14, 512, 8), ConvTile::Large);
        // conv1 (N = 64) is narrower than the large tile.
        assert_eq!(ConvTile::for_gemm(32 * 224 * 224, 64, 1), ConvTile::Small);
    }

    #[test]
    fn tile_constants_match_wgsl() {
        for (name, v) in [
            ("BM", BM),
            ("BN", BN),
            ("BK", BK),
            ("TM", TM),
            ("TN", TN),
            ("THREADS", THREADS),
        ] {
            assert_eq!(wgsl_u32_const(&shaders::CONV2D, name), v, "{name}");
        }
        // The thread layout the shader hard-codes (16x16 threads, 4 A and 4 B loads each,
        // a 4x4 block per thread held in four vec4).
        assert_eq!(THREADS, 256);
        assert_eq!(BM, 16 * TM);
        assert_eq!(BN, 16 * TN);
        assert_eq!(BM * BK, 4 * THREADS);
        assert_eq!(BN * BK, 4 * THREADS);
        assert_eq!(TM, 4);
        assert_eq!(TN, 4);
        assert_eq!(wgsl_u32_const(&shaders::CONV2D, "A_ROW"), BM / 4 + 1);
        assert_eq!(wgsl_u32_const(&shaders::CONV2D, "B_ROW"), BN / 4);
    }
}
