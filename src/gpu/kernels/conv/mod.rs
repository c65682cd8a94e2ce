//! The convolution kernel family: host side of `shaders/conv2d*.wgsl`. `tile` says what each
//! tile computes and the size rule, `types` makes a tile's storage variants, `weights` uploads
//! a layer, `tuning` times the candidate tiles, `coop_check` vets the cooperative-matrix
//! kernel on a device; this file records a convolution with the tile chosen.

mod coop_check;
mod tile;
mod tuning;
mod types;
mod weights;

pub use coop_check::agree_within_sum_bound;
pub use tile::*;
pub use types::ConvTypes;
pub use weights::GpuConv2d;

use crate::error::{Error, Result};
use crate::gpu::dispatch::{record, Grid};
use crate::gpu::plan::plan_row_bands;
use crate::gpu::shaders::wgsl_uniform;
use crate::gpu::tensor::{Dtype, GpuTensor, Scratch};
use crate::gpu::{Binding, GpuBuffer, GpuContext, Kernel};
use crate::shape::{Conv2dSpec, Shape4};
use std::collections::HashMap;
use std::sync::Mutex;

wgsl_uniform! {
    /// Uniform block of `conv2d.wgsl`; field order and types match the WGSL struct.
    pub struct ConvParams in CONV2D, test conv_params_layout_matches_wgsl {
        in_h, in_w, in_c, in_base, out_h, out_w, out_c, out_base, kh, kw, stride_h, stride_w,
        pad_h, pad_w, k_total, relu, out_row0, out_rows, in_row0, out_stride, out_c0, k_chunk,
        residual, res_base,
    }
}

/// Threads per workgroup of `conv2d_splitk_reduce.wgsl`.
pub const REDUCE_WORKGROUP: u32 = 256;

wgsl_uniform! {
    /// Uniform block of `conv2d_splitk_reduce.wgsl`; field order and types match the WGSL struct.
    pub struct ReduceParams in CONV2D_SPLITK_REDUCE, test reduce_params_layout_matches_wgsl {
        count, out_c, out_w, out_h, out_row0, out_base, out_stride, out_c0, splits, relu,
        residual, res_base,
    }
}

/// Whether the cooperative-matrix convolution agreed with the scalar f16 one on a device
/// (checked once, on first use), or why it is not used: kept per device by the context.
#[derive(Default)]
struct CoopVerdict(std::sync::OnceLock<std::result::Result<(), String>>);

/// The largest finite f16.
pub const F16_MAX: f32 = 65504.0;

/// The convolution on a device: its pipelines (one per tile and storage types, in the
/// device's pipeline cache), scratch buffers and tile choices, shared by all layers.
pub struct Conv2dKernel {
    /// Split-K's partial sums.
    partial: Scratch,
    /// Bound as the overflow flags where the caller keeps none.
    no_flags: GpuBuffer,
    /// Bound as the partial sums of the small tile's dispatches that do not split K.
    no_partial: GpuBuffer,
    /// Bound as the residual of convolutions without one.
    no_residual: GpuBuffer,
    /// A tile forced for every layer, else chosen per layer.
    forced: Option<ConvTile>,
    /// Workgroups a layer must give with the large tile to use it.
    min_large_workgroups: u64,
    /// Whether the size rule splits K of layers that leave the GPU half idle.
    split_by_rule: bool,
    /// Tiles autotuning chose for this kernel's layers, so that later batches find theirs
    /// without the process-wide cache's lock and key text.
    tuned: Mutex<HashMap<(Conv2dSpec, crate::shape::Shape4, ConvTypes), ConvTile>>,
    /// The tiles each layer (by geometry and input shape) last ran with, for reports.
    ran: Mutex<HashMap<(Conv2dSpec, crate::shape::Shape4), Vec<ConvTile>>>,
}

impl Conv2dKernel {
    /// Compiles the kernels; the tile is chosen per layer unless `CROSSPOOL_CONV_TILE`
    /// forces one.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::with_tile(ctx, ConvTile::from_env()?)
    }

    /// Compiles the kernels, with `tile` forced for every layer (`None`: chosen per layer).
    pub fn with_tile(ctx: &GpuContext, tile: Option<ConvTile>) -> Result<Self> {
        let k = Conv2dKernel {
            partial: Scratch::new("split-K partial sums"),
            no_flags: ctx.storage_buffer(4, "conv overflow flags (unread)")?,
            no_partial: ctx.storage_buffer(4, "split-K partial sums (unused)")?,
            no_residual: ctx.storage_buffer(4, "conv residual (unused)")?,
            forced: tile,
            min_large_workgroups: large_tile_min_workgroups(ctx),
            split_by_rule: ctx.info.device_type != wgpu::DeviceType::Cpu,
            tuned: Mutex::new(HashMap::new()),
            ran: Mutex::new(HashMap::new()),
        };
        // The f32 kernels now, so that a broken shader fails here rather than mid-run.
        let f32s = ConvTypes {
            input: Dtype::F32,
            output: Dtype::F32,
            weights: Dtype::F32,
        };
        k.kernel(ctx, ConvTile::Small, f32s)?;
        k.kernel(ctx, ConvTile::Large, f32s)?;
        Ok(k)
    }

    /// The pipeline for `tile` and `types`, from the device's one pipeline cache.
    fn kernel(&self, ctx: &GpuContext, tile: ConvTile, types: ConvTypes) -> Result<Kernel> {
        ctx.kernel(&types.shader(tile)?, "main")
    }

    /// The tiles a layer of `spec` on `input` last ran with (one per channel slice where
    /// they differ, as `large+small`), or `None` if it has not run.
    pub fn tiles_run(&self, spec: Conv2dSpec, input: crate::shape::Shape4) -> Option<String> {
        let ran = self.ran.lock().unwrap_or_else(|e| e.into_inner());
        ran.get(&(spec, input))
            .map(|t| t.iter().map(|t| t.name()).collect::<Vec<_>>().join("+"))
    }

    /// Split-K's second pass for outputs of `output` type from a layer of `weights` type.
    fn reduce_kernel(&self, ctx: &GpuContext, output: Dtype, weights: Dtype) -> Result<Kernel> {
        // The reduction stores and flags as the convolution would.
        let t = ConvTypes {
            input: output,
            output,
            weights,
        };
        let (from, to) = t.output_rewrite();
        let shader = CONV2D_SPLITK_REDUCE
            .specialise(&[(from, to.as_str())])?
            .with_constants(t.epilogue_constants());
        ctx.kernel(&shader, "main")
    }

    /// The tile this kernel runs a layer of `spec` producing `out` (one slice of `n`
    /// channels) with, by the size rule: the whole-K tile where K fits its stage (it does
    /// the small tile's work less the zero padding of K and a barrier: twice as fast on
    /// lavapipe's conv1_1), else the large tile where it fills the GPU, else the small one,
    /// with K split where even that leaves the GPU half idle (on hardware GPUs: on software
    /// adapters a thread per workgroup layer gains nothing). Cooperative matrices are chosen
    /// by [`Conv2dKernel::tile_for_layer`].
    fn tile_for(&self, spec: Conv2dSpec, out: crate::shape::Shape4, n: usize) -> ConvTile {
        let m = (out.n * out.h * out.w) as u64;
        match self.forced {
            Some(t) if t != ConvTile::Coop => t,
            _ if spec.k_total() <= WHOLE_K_MAX as usize => ConvTile::Whole,
            _ => match ConvTile::for_gemm(m, n as u64, self.min_large_workgroups) {
                ConvTile::Small if self.split_by_rule => ConvTile::split_for_gemm(
                    m,
                    n as u64,
                    spec.k_total() as u64,
                    self.min_large_workgroups,
                ),
                t => t,
            },
        }
    }

    /// The tile for a layer with weights stored as `weights`: the cooperative-matrix kernel
    /// for f16 weights where the device has it and it passed its check, else
    /// [`Conv2dKernel::tile_for`].
    fn tile_for_layer(
        &self,
        ctx: &GpuContext,
        weights: Dtype,
        spec: Conv2dSpec,
        out: crate::shape::Shape4,
        n: usize,
    ) -> Result<ConvTile> {
        if weights == Dtype::F16 {
            match (self.forced, self.cooperative(ctx)) {
                (Some(ConvTile::Coop) | None, Ok(())) => return Ok(ConvTile::Coop),
                (Some(ConvTile::Coop), Err(why)) => {
                    return Err(Error::Config(format!("CROSSPOOL_CONV_TILE=coop: {why}")))
                }
                _ => {}
            }
        }
        Ok(self.tile_for(spec, out, n))
    }

    /// Whether layers with f16 weights run on cooperative matrices on `ctx`, or why not. The
    /// first call on a device that has them compares the kernel with the scalar f16 kernel
    /// (`verify_cooperative`); the verdict holds for the device's life.
    pub fn cooperative(&self, ctx: &GpuContext) -> std::result::Result<(), String> {
        if !ctx.cooperative_matrix {
            return Err(
                "this adapter lacks cooperative matrices in 16x16x16 f16 x f16 -> f32 with subgroups of 32 (or CROSSPOOL_NO_COOPERATIVE_MATRIX=1)"
                    .into(),
            );
        }
        ctx.kernel_state::<CoopVerdict>()
            .0
            .get_or_init(|| {
                self.verify_cooperative(ctx)
                    .unwrap_or_else(|e| Err(e.to_string()))
            })
            .clone()
    }

    /// Records `output = conv(input)` into `enc`, split into row bands that fit the device's
    /// binding limit. `output` must have the layer's output shape. With `overflow`, for every
    /// image of the batch whose outputs exceed the layer's range (f16's 65504 for a layer with
    /// f16 weights, else only infinities), sets that image's u32 there non-zero (`overflow`
    /// holds one per image of the batch; the caller clears it).
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        layer: &GpuConv2d,
        (input, output): (&GpuTensor, &GpuTensor),
        overflow: Option<&GpuBuffer>,
    ) -> Result<()> {
        self.record_with(ctx, enc, None, layer, (input, None, output), overflow)
    }

    /// [`Conv2dKernel::record`] with a residual `shortcut` (the output's shape, f32) added
    /// to the sums before ReLU, in the convolution's epilogue.
    pub fn record_residual(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        layer: &GpuConv2d,
        (input, shortcut, output): (&GpuTensor, Option<&GpuTensor>, &GpuTensor),
        overflow: Option<&GpuBuffer>,
    ) -> Result<()> {
        self.record_with(ctx, enc, None, layer, (input, shortcut, output), overflow)
    }

    /// [`Conv2dKernel::record`] with `tile` (or, if `None`, the tile chosen per
    /// layer and slice).
    fn record_with(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        tile: Option<ConvTile>,
        layer: &GpuConv2d,
        (input, shortcut, output): (&GpuTensor, Option<&GpuTensor>, &GpuTensor),
        overflow: Option<&GpuBuffer>,
    ) -> Result<()> {
        let spec = layer.spec;
        let out = spec.output_shape(input.shape)?;
        Shape4::check_output("conv2d", out, output.shape)?;
        if let Some(s) = shortcut {
            Shape4::check_output("residual addition", s.shape, out)?;
            if s.dtype != Dtype::F32 {
                return Err(Error::shape(
                    "residual addition",
                    "the shortcut must be stored in f32",
                ));
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let limits = ctx.band_limits((ctx.max_workgroups() as usize * BM as usize) / out.w);
        let bands = plan_row_bands("conv2d", input.shape, out, &spec.window, limits)?;
        let in_row = (input.shape.w * input.shape.c) as u64;
        let out_row = (out.w * out.c) as u64;
        let w = spec.window;
        let types = ConvTypes {
            input: input.dtype,
            output: output.dtype,
            weights: layer.dtype,
        };
        let flags = overflow.unwrap_or(&self.no_flags);
        // Reports show the tiles chosen for the layer, not autotuning's trials.
        let chosen_here = tile.is_none();
        let tile = match (tile, &ctx.autotune) {
            (None, Some(cache)) if self.forced.is_none() => {
                Some(self.tuned_tile(ctx, cache.as_deref(), layer, input, output)?)
            }
            _ => tile,
        };
        let mut ran = Vec::new();
        for band in bands {
            let (iw, ow) = band.windows(
                (in_row, out_row),
                (input.dtype.bytes(), output.dtype.bytes()),
                limits.align,
            );
            // The residual, f32, bound over the same rows as the output.
            let res_window = band
                .windows((in_row, out_row), (input.dtype.bytes(), 4), limits.align)
                .1;
            let residual = match shortcut {
                Some(s) => res_window.bind(&s.buffer),
                None => Binding::whole(&self.no_residual),
            };
            let m = (band.out_rows * out.w) as u32;
            for slice in &layer.slices {
                let tile = match tile {
                    Some(t) => t,
                    None => self.tile_for_layer(ctx, layer.dtype, spec, out, slice.n)?,
                };
                // Split-K: K in chunks of whole BK slices, one workgroup layer each, while
                // the partial sums fit one binding (else the small tile without a split).
                let k_total = spec.k_total() as u64;
                let split = match tile {
                    ConvTile::SplitK(s) => {
                        let chunk = k_total.div_ceil(s as u64).next_multiple_of(BK as u64);
                        let layers = k_total.div_ceil(chunk);
                        let bytes = layers * m as u64 * slice.n as u64 * 4;
                        (layers > 1 && bytes <= ctx.binding_cap()).then_some((chunk, layers, bytes))
                    }
                    _ => None,
                };
                let tile = match (tile, split) {
                    (ConvTile::SplitK(_), None) => ConvTile::Small,
                    (ConvTile::Whole, _) if k_total > WHOLE_K_MAX as u64 => ConvTile::Small,
                    _ => tile,
                };
                if !ran.contains(&tile) {
                    ran.push(tile);
                }
                let (bm, bn) = tile.dims();
                let kernel = self.kernel(ctx, tile, types)?;
                let partial = match split {
                    Some((_, _, bytes)) => Some(self.partial.at_least(ctx, bytes)?),
                    None => None,
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
                    k_chunk: split.map_or(0, |(chunk, _, _)| chunk as u32),
                    residual: shortcut.is_some() as u32,
                    res_base: res_window.base,
                };
                let partial_binding = match (&partial, split) {
                    (Some(p), Some((_, _, bytes))) => Binding {
                        buffer: p,
                        offset: 0,
                        size: bytes,
                    },
                    _ => Binding::whole(&self.no_partial),
                };
                let mut bindings = vec![
                    iw.bind(&input.buffer),
                    Binding::whole(&slice.weights),
                    Binding::whole(&slice.bias),
                    ow.bind(&output.buffer),
                    Binding::whole(flags),
                    residual,
                ];
                if tile.binds_partial_sums() {
                    bindings.push(partial_binding);
                }
                let layers = split.map_or(1, |(_, l, _)| l as u32);
                record(
                    ctx,
                    enc,
                    &kernel,
                    &params,
                    &bindings,
                    (m.div_ceil(bm), (slice.n as u32).div_ceil(bn), layers),
                );
                if split.is_some() {
                    let count = m as u64 * slice.n as u64;
                    let reduce = ReduceParams {
                        count: count as u32,
                        out_c: slice.n as u32,
                        out_w: out.w as u32,
                        out_h: out.h as u32,
                        out_row0: band.out_row0 as u32,
                        out_base: ow.base,
                        out_stride: out.c as u32,
                        out_c0: slice.c0 as u32,
                        splits: layers,
                        relu: spec.relu as u32,
                        residual: shortcut.is_some() as u32,
                        res_base: res_window.base,
                    };
                    record(
                        ctx,
                        enc,
                        &self.reduce_kernel(ctx, output.dtype, layer.dtype)?,
                        &reduce,
                        &[
                            partial_binding,
                            Binding::whole(&slice.bias),
                            ow.bind(&output.buffer),
                            Binding::whole(flags),
                            residual,
                        ],
                        Grid::Threads(count, REDUCE_WORKGROUP),
                    );
                }
            }
        }
        if chosen_here {
            let mut held = self.ran.lock().unwrap_or_else(|e| e.into_inner());
            if held.get(&(spec, input.shape)) != Some(&ran) {
                held.insert((spec, input.shape), ran);
            }
        }
        Ok(())
    }

    /// Allocates the output, runs the convolution and submits it.
    pub fn run(&self, ctx: &GpuContext, layer: &GpuConv2d, input: &GpuTensor) -> Result<GpuTensor> {
        self.run_as(ctx, layer, input, Dtype::F32)
    }

    /// [`Conv2dKernel::run`] with the output stored as `dtype`.
    pub fn run_as(
        &self,
        ctx: &GpuContext,
        layer: &GpuConv2d,
        input: &GpuTensor,
        dtype: Dtype,
    ) -> Result<GpuTensor> {
        let shape = layer.spec.output_shape(input.shape)?;
        let output = GpuTensor::with_dtype(ctx, shape, dtype, "conv output")?;
        ctx.submit("conv2d", |enc| {
            self.record(ctx, enc, layer, (input, &output), None)
        })?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests;
