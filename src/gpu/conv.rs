//! Host side of `shaders/conv2d.wgsl`: uploading layer weights and recording convolutions.

use super::dispatch::grid_for;
use super::dispatch::record;
use super::plan::{plan_row_bands, BandLimits, BindingWindow};
use super::tensor::{storage_from_f16, storage_from_slice, Dtype, GpuTensor, Scratch};
use super::{shaders, Binding, GpuBuffer, GpuContext, Kernel};
use crate::error::{Error, Result};
use crate::shape::Conv2dSpec;
use crate::weights::Conv2dWeights;
use std::collections::HashMap;
use std::sync::Mutex;

/// The workgroup tiles `conv2d.wgsl` (64 x 64, 4 x 4 per thread) and `conv2d_large.wgsl`
/// (128 x 128, 8 x 8 per thread) compute; both produce the same convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvTile {
    /// 64 x 64 outputs per workgroup, 16-deep slices.
    Small,
    /// 128 x 128 outputs per workgroup, 8-deep slices: more FMAs per load where the layer
    /// gives enough workgroups to fill the GPU.
    Large,
    /// [`ConvTile::Large`] double-buffered: each slice's global loads are issued before the
    /// previous slice is multiplied, one barrier a slice. A candidate for autotuning (the
    /// size rule does not pick it: it is untimed on GPUs).
    Large2,
    /// 64 x 64 outputs per workgroup of one subgroup, on cooperative matrices (tensor
    /// cores): layers with f16 weights, on devices that have them and pass the check
    /// against the scalar f16 kernel.
    Coop,
    /// The small tile with K split over this many workgroup layers (at least 2), their sums
    /// added by a second pass: for layers whose M x N gives too few workgroups.
    SplitK(u32),
    /// 64 x 64 outputs per workgroup with all of K (at most [`WHOLE_K_MAX`]) staged at once:
    /// the RGB first layer.
    Whole,
}

/// The deepest K [`ConvTile::Whole`] stages (`K_MAX` in `conv2d_whole_k.wgsl`).
pub const WHOLE_K_MAX: u32 = 32;

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
            ConvTile::Small | ConvTile::SplitK(_) | ConvTile::Whole => (BM, BN),
            ConvTile::Large | ConvTile::Large2 => (LARGE_BM, LARGE_BN),
            ConvTile::Coop => (COOP_BM, COOP_BN),
        }
    }

    /// For the small tile on a GEMM of `m` x `n` x `k` that gives fewer than half of
    /// `min_workgroups` workgroups, the split of K into 2, 4, 8 or 16 layers (each of at
    /// least four BK-deep slices) that first gives `min_workgroups`, or the deepest allowed;
    /// else (or if K is too short to split) the small tile.
    pub fn split_for_gemm(m: u64, n: u64, k: u64, min_workgroups: u64) -> Self {
        let tiles = m.div_ceil(BM as u64) * n.div_ceil(BN as u64);
        if tiles * 2 >= min_workgroups {
            return ConvTile::Small;
        }
        let allowed: Vec<u32> = [2u32, 4, 8, 16]
            .into_iter()
            .filter(|&s| k >= 4 * BK as u64 * s as u64)
            .collect();
        allowed
            .iter()
            .find(|&&s| tiles * s as u64 >= min_workgroups)
            .or(allowed.last())
            .map_or(ConvTile::Small, |&s| ConvTile::SplitK(s))
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

    /// The tile `CROSSPOOL_CONV_TILE` forces (`small`, `large`, `splitN`, `coop`: for the
    /// layers with f16 weights), or `None` for the choice per layer (unset or `auto`).
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var("CROSSPOOL_CONV_TILE").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(None),
            Ok(name) => Self::from_name(name).map(Some).ok_or_else(|| {
                Error::Config(format!(
                    "CROSSPOOL_CONV_TILE={name} is not one of auto, small, large, split2 .. split64, coop"
                ))
            }),
        }
    }

    /// The tile's name (as `CROSSPOOL_CONV_TILE` and the autotuning cache spell it).
    pub fn name(self) -> String {
        match self {
            ConvTile::Small => "small".into(),
            ConvTile::Large => "large".into(),
            ConvTile::Large2 => "large2".into(),
            ConvTile::Whole => "whole".into(),
            ConvTile::Coop => "coop".into(),
            ConvTile::SplitK(s) => format!("split{s}"),
        }
    }

    /// The tile named `name` (`splitN` for N from 2 to 64).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "small" => Some(ConvTile::Small),
            "large" => Some(ConvTile::Large),
            "large2" => Some(ConvTile::Large2),
            "whole" => Some(ConvTile::Whole),
            "coop" => Some(ConvTile::Coop),
            _ => name
                .strip_prefix("split")
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|s| (2..=64).contains(s))
                .map(ConvTile::SplitK),
        }
    }

    /// The WGSL source of this tile's kernel.
    fn shader(self) -> &'static shaders::Shader {
        match self {
            ConvTile::Small | ConvTile::SplitK(_) => &shaders::CONV2D,
            ConvTile::Large | ConvTile::Large2 => &shaders::CONV2D_LARGE,
            ConvTile::Whole => &shaders::CONV2D_WHOLE_K,
            ConvTile::Coop => &shaders::CONV2D_COOP,
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

/// Invocations per workgroup of the cooperative-matrix kernel: one subgroup, which must be
/// exactly this wide.
pub const COOP_WG: u32 = 32;
/// Output pixels per workgroup tile of the cooperative-matrix kernel.
pub const COOP_BM: u32 = 64;
/// Output channels per workgroup tile of the cooperative-matrix kernel.
pub const COOP_BN: u32 = 64;
/// Reduction depth per step of the cooperative-matrix kernel (one 16 x 16 x 16 product).
pub const COOP_BK: u32 = 16;

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
    k_chunk: u32,
    _pad1: u32,
    _pad2: u32,
}

/// Threads per workgroup of `conv2d_splitk_reduce.wgsl`.
pub const REDUCE_WORKGROUP: u32 = 256;

/// Uniform block of `conv2d_splitk_reduce.wgsl`; field order and types match the WGSL struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ReduceParams {
    count: u32,
    out_c: u32,
    out_w: u32,
    out_h: u32,
    out_row0: u32,
    out_base: u32,
    out_stride: u32,
    out_c0: u32,
    splits: u32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
}

/// The storage types a convolution kernel variant reads and writes (its sums are f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTypes {
    /// Input activations.
    pub input: Dtype,
    /// Output activations.
    pub output: Dtype,
    /// Weights. f16 weights mark an f16 layer, whose every output must fit f16's range
    /// (whatever its own output type: it may feed an f16 tensor later).
    pub weights: Dtype,
}

impl ConvTypes {
    /// The line rewrites that make this variant of the scalar kernels (the prelude's lines).
    fn rewrites(self) -> [(&'static str, String); 4] {
        let [out_t, limit] = self.epilogue_rewrites();
        [
            (
                "alias in_t = f32;",
                format!("alias in_t = {};", self.input.wgsl()),
            ),
            out_t,
            (
                "alias w_t = f32;",
                format!("alias w_t = {};", self.weights.wgsl()),
            ),
            limit,
        ]
    }

    /// The rewrites of what the epilogue stores and checks: the output type, and the range
    /// of a layer of these weights (also those of split-K's reduction).
    fn epilogue_rewrites(self) -> [(&'static str, String); 2] {
        [
            (
                "alias out_t = f32;",
                format!("alias out_t = {};", self.output.wgsl()),
            ),
            (
                "const ACT_LIMIT: f32 = 3.40282347e38;",
                match self.weights {
                    Dtype::F32 => "const ACT_LIMIT: f32 = 3.40282347e38;".into(),
                    Dtype::F16 => format!("const ACT_LIMIT: f32 = {F16_MAX:.1};"),
                },
            ),
        ]
    }

    /// `tile`'s kernel specialised to these types. The cooperative-matrix kernel takes f16
    /// weights only, so it has no weights type or range to set.
    pub fn shader(self, tile: ConvTile) -> Result<shaders::Shader> {
        let r = self.rewrites();
        let mut pairs: Vec<(&str, &str)> = match tile {
            ConvTile::Coop if self.weights != Dtype::F16 => {
                return Err(Error::Config(
                    "the cooperative-matrix convolution takes f16 weights only".into(),
                ))
            }
            ConvTile::Coop => r[..2].iter().map(|(a, b)| (*a, b.as_str())).collect(),
            _ => r.iter().map(|(a, b)| (*a, b.as_str())).collect(),
        };
        if tile == ConvTile::Large2 {
            pairs.push(("const STAGES: u32 = 1u;", "const STAGES: u32 = 2u;"));
        }
        tile.shader().specialise(&pairs)
    }
}

/// The largest finite f16.
pub const F16_MAX: f32 = 65504.0;

/// A convolution layer's weights on the GPU, in the kernel's `[K][n]` layout, split by output
/// channel into slices whose weights each fit one storage binding.
pub struct GpuConv2d {
    /// Geometry.
    pub spec: Conv2dSpec,
    /// How the weights are stored (the bias is f32 either way).
    pub dtype: Dtype,
    slices: Vec<ChannelSlice>,
}

struct ChannelSlice {
    c0: usize,
    n: usize,
    weights: GpuBuffer,
    bias: GpuBuffer,
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

/// The compiled convolution pipelines, one per tile and storage types (compiled on first
/// use); one per device, shared by all layers.
pub struct Conv2dKernel {
    variants: Mutex<HashMap<(ConvTile, ConvTypes), Kernel>>,
    /// Split-K's second pass, by (output type, weights type).
    reduce: Mutex<HashMap<(Dtype, Dtype), Kernel>>,
    /// Split-K's partial sums.
    partial: Scratch,
    /// Bound as the overflow flags where the caller keeps none.
    no_flags: GpuBuffer,
    /// Bound as the partial sums of the small tile's dispatches that do not split K.
    no_partial: GpuBuffer,
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
            variants: Mutex::new(HashMap::new()),
            reduce: Mutex::new(HashMap::new()),
            partial: Scratch::new("split-K partial sums"),
            no_flags: ctx.storage_buffer(4, "conv overflow flags (unread)")?,
            no_partial: ctx.storage_buffer(4, "split-K partial sums (unused)")?,
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

    /// The pipeline for `tile` and `types`, compiled on first use.
    fn kernel(&self, ctx: &GpuContext, tile: ConvTile, types: ConvTypes) -> Result<Kernel> {
        let mut held = self.variants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = held.get(&(tile, types)) {
            return Ok(k.clone());
        }
        let k = ctx.kernel(&types.shader(tile)?, "main")?;
        held.insert((tile, types), k.clone());
        Ok(k)
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
        let mut held = self.reduce.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = held.get(&(output, weights)) {
            return Ok(k.clone());
        }
        // The reduction stores and flags as the convolution would.
        let r = ConvTypes {
            input: output,
            output,
            weights,
        }
        .epilogue_rewrites();
        let shader = shaders::CONV2D_SPLITK_REDUCE
            .specialise(&[(r[0].0, r[0].1.as_str()), (r[1].0, r[1].1.as_str())])?;
        let k = ctx.kernel(&shader, "main")?;
        held.insert((output, weights), k.clone());
        Ok(k)
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

    /// The tile timing picks for `layer` on this input and output (see [`super::autotune`]):
    /// each candidate (the small, large and double-buffered large tiles, the whole-K one
    /// where K fits, splits of K around the size rule's where the small tile leaves the GPU
    /// half idle, and cooperative matrices for f16 weights where they passed their check)
    /// runs the whole layer once to warm up, then twice in one submission of enough
    /// repetitions to last some 5 ms, the faster repetition counting.
    fn tuned_tile(
        &self,
        ctx: &GpuContext,
        cache: Option<&std::path::Path>,
        layer: &GpuConv2d,
        input: &GpuTensor,
        output: &GpuTensor,
    ) -> Result<ConvTile> {
        let types = ConvTypes {
            input: input.dtype,
            output: output.dtype,
            weights: layer.dtype,
        };
        let memo = (layer.spec, input.shape, types);
        if let Some(t) = self
            .tuned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&memo)
        {
            return Ok(*t);
        }
        let (s, w, i) = (layer.spec, layer.spec.window, &ctx.info);
        let key = format!(
            "{} ({:?}, {:04x}:{:04x}, {} {}) | in {}x{}x{}x{} {:?} | {}x{} s{}x{} p{}x{} -> {} | weights {:?}, out {:?}",
            i.name, i.backend, i.vendor, i.device, i.driver, i.driver_info,
            input.shape.n, input.shape.h, input.shape.w, input.shape.c, input.dtype,
            w.kh, w.kw, w.stride_h, w.stride_w, w.pad_h, w.pad_w, s.out_c,
            layer.dtype, output.dtype,
        );
        let tile = super::autotune::choose(cache, &key, || {
            let mut candidates = vec![ConvTile::Small, ConvTile::Large, ConvTile::Large2];
            if s.k_total() <= WHOLE_K_MAX as usize {
                candidates.push(ConvTile::Whole);
            }
            // Splits of K where the small tile leaves a GPU half idle (as the rule would).
            let m = (input.shape.n * output.shape.h * output.shape.w) as u64;
            let k = s.k_total() as u64;
            if let ConvTile::SplitK(by_rule) =
                ConvTile::split_for_gemm(m, s.out_c as u64, k, self.min_large_workgroups)
            {
                candidates.extend(
                    [by_rule / 2, by_rule, by_rule * 2]
                        .into_iter()
                        .filter(|&layers| layers >= 2 && k >= 4 * BK as u64 * layers as u64)
                        .map(ConvTile::SplitK),
                );
            }
            if layer.dtype == Dtype::F16 && self.cooperative(ctx).is_ok() {
                candidates.push(ConvTile::Coop);
            }
            let run = |tile: ConvTile, reps: usize| -> Result<f64> {
                let t0 = std::time::Instant::now();
                ctx.submit("autotuning a convolution", |enc| {
                    for _ in 0..reps {
                        self.record_with(ctx, enc, Some(tile), layer, (input, output), None)?;
                    }
                    Ok(())
                })?;
                ctx.wait("autotuning a convolution")?;
                Ok(t0.elapsed().as_secs_f64() / reps as f64)
            };
            candidates
                .into_iter()
                .map(|tile| {
                    let once = run(tile, 1)?;
                    let reps = ((0.005 / once.max(1e-6)).ceil() as usize).clamp(1, 64);
                    Ok((tile, run(tile, reps)?.min(run(tile, reps)?)))
                })
                .collect()
        })?;
        self.tuned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(memo, tile);
        Ok(tile)
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
        ctx.coop_verdict
            .get_or_init(|| {
                self.verify_cooperative(ctx)
                    .unwrap_or_else(|e| Err(e.to_string()))
            })
            .clone()
    }

    /// Runs the cooperative-matrix kernel and the scalar f16 kernel on the same f16 data, on
    /// an odd shape (ragged tiles in M, N and K), and compares them within the bound both
    /// must meet: each is within `gamma_n * sum |w x|` of the exact sum of the same products,
    /// so they are within twice that of each other. `sum |w x|` comes from the scalar kernel
    /// on |x| and |w|. Ok(Err) when they disagree.
    fn verify_cooperative(&self, ctx: &GpuContext) -> Result<std::result::Result<(), String>> {
        let spec = Conv2dSpec {
            in_c: 19,
            out_c: 70,
            window: crate::shape::Window2d::square(3, 1, 1),
            relu: false,
        };
        let shape = crate::shape::Shape4::new(2, 9, 11, spec.in_c);
        // Deterministic values in [-1, 1) (a 64-bit LCG), scaled as He initialisation would.
        let mut s = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let scale = (2.0 / spec.k_total() as f32).sqrt();
        let w: Vec<f32> = (0..spec.weight_len()).map(|_| next() * scale).collect();
        let x: Vec<f32> = (0..shape.len()).map(|_| next()).collect();
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        let zero_bias = vec![0.0; spec.out_c];
        let layer = |w: Vec<f32>| -> Result<GpuConv2d> {
            GpuConv2d::upload_as(
                ctx,
                &Conv2dWeights::new(spec, w, zero_bias.clone())?,
                Dtype::F16,
            )
        };
        let run = |tile: ConvTile, layer: &GpuConv2d, x: &[f32]| -> Result<Vec<f32>> {
            let input = GpuTensor::upload_as(ctx, x, shape, Dtype::F16, "coop check input")?;
            let out = GpuTensor::new(ctx, spec.output_shape(shape)?, "coop check output")?;
            ctx.submit("checking the cooperative-matrix kernel", |enc| {
                self.record_with(ctx, enc, Some(tile), layer, (&input, &out), None)
            })?;
            out.download(ctx)
        };
        let (signed, magnitude) = (layer(w.clone())?, layer(abs(&w))?);
        let coop = run(ConvTile::Coop, &signed, &x)?;
        let scalar = run(ConvTile::Small, &signed, &x)?;
        let mag = run(ConvTile::Small, &magnitude, &abs(&x))?;
        Ok(agree_within_sum_bound(&coop, &scalar, &mag, spec.k_total()))
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
        self.record_flagged(ctx, enc, layer, input, output, None)
    }

    /// [`Conv2dKernel::record`], and for every image of the batch whose outputs exceed the
    /// layer's range (f16's 65504 for a layer with f16 weights, else only infinities), sets
    /// that image's u32 in `overflow` non-zero (`overflow` holds one per image of the batch;
    /// the caller clears it).
    pub fn record_flagged(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        layer: &GpuConv2d,
        input: &GpuTensor,
        output: &GpuTensor,
        overflow: Option<&GpuBuffer>,
    ) -> Result<()> {
        self.record_with(ctx, enc, None, layer, (input, output), overflow)
    }

    /// [`Conv2dKernel::record_flagged`] with `tile` (or, if `None`, the tile chosen per
    /// layer and slice).
    fn record_with(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        tile: Option<ConvTile>,
        layer: &GpuConv2d,
        (input, output): (&GpuTensor, &GpuTensor),
        overflow: Option<&GpuBuffer>,
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
            // The planner sized bands for f32; f16 windows are half as large, so they fit too.
            let iw = BindingWindow::of(
                band.in_row0 as u64 * in_row,
                band.in_rows as u64 * in_row,
                limits.align,
                input.dtype.bytes(),
            );
            let ow = BindingWindow::of(
                band.out_row0 as u64 * out_row,
                band.out_rows as u64 * out_row,
                limits.align,
                output.dtype.bytes(),
            );
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
                    _pad1: 0,
                    _pad2: 0,
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
                ];
                // Only the small tile's kernel declares the partial sums.
                if tile == ConvTile::Small || split.is_some() {
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
                        _pad0: 0,
                        _pad1: 0,
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
                        ],
                        grid_for(
                            count.div_ceil(REDUCE_WORKGROUP as u64),
                            ctx.max_workgroups(),
                        ),
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
        ctx.submit("conv2d", |enc| self.record(ctx, enc, layer, input, &output))?;
        Ok(output)
    }
}

/// Whether `got` (one kernel's outputs) equals `other` (another's, from the same f16
/// products) within `2 gamma_n * magnitude` per element (`magnitude`: the sum of the absolute
/// products) plus an f32 ulp of each: the bound two f32 sums of the same n terms, in any
/// order, meet between themselves. The first element outside it, if any, in words.
pub fn agree_within_sum_bound(
    got: &[f32],
    other: &[f32],
    magnitude: &[f32],
    terms: usize,
) -> std::result::Result<(), String> {
    if got.len() != other.len() || got.len() != magnitude.len() {
        return Err(format!(
            "{} outputs against {} ({} magnitudes)",
            got.len(),
            other.len(),
            magnitude.len()
        ));
    }
    let u = f32::EPSILON as f64 / 2.0;
    let nu = terms as f64 * u;
    let gamma = nu / (1.0 - nu);
    for (i, ((&g, &o), &m)) in got.iter().zip(other).zip(magnitude).enumerate() {
        let tol = 2.0 * gamma * m as f64 + (g.abs().max(o.abs()) as f64) * f32::EPSILON as f64;
        let err = (g as f64 - o as f64).abs();
        // A NaN on either side is a disagreement.
        if err.is_nan() || err > tol {
            return Err(format!(
                "the cooperative-matrix kernel gave {g} where the scalar f16 kernel gave {o} (output {i}, bound {tol:e})"
            ));
        }
    }
    if other.iter().all(|&v| v == 0.0) {
        return Err("the scalar f16 kernel gave only zeros, so nothing was compared".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::shaders::tests::{assert_valid_spirv, wgsl_struct_layout, wgsl_u32_const};

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
            k_chunk,
            _pad1,
            _pad2
        });
        assert_eq!(members, rust);
        let (members, size) = wgsl_struct_layout(&shaders::CONV2D_SPLITK_REDUCE, "ReduceParams");
        assert_eq!(size as usize, std::mem::size_of::<ReduceParams>());
        let rust = crate::field_offsets!(ReduceParams {
            count,
            out_c,
            out_w,
            out_h,
            out_row0,
            out_base,
            out_stride,
            out_c0,
            splits,
            relu,
            _pad0,
            _pad1
        });
        assert_eq!(members, rust);
        assert_eq!(
            wgsl_u32_const(&shaders::CONV2D_SPLITK_REDUCE, "WORKGROUP"),
            REDUCE_WORKGROUP
        );
    }

    #[test]
    fn k_is_split_where_the_small_tile_leaves_the_gpu_half_idle() {
        let gpu = LARGE_TILE_MIN_WORKGROUPS;
        // VGG16's conv5 at 224, batch 1: M = 196, N = 512 gives 4 x 8 = 32 small tiles; K =
        // 4608 is split 16 ways for 512 workgroups (8 would give 256, short of 264).
        assert_eq!(
            ConvTile::split_for_gemm(196, 512, 4608, gpu),
            ConvTile::SplitK(16)
        );
        // At batch 8 (25 x 8 = 200 tiles, over half of 264) the small tile alone.
        assert_eq!(
            ConvTile::split_for_gemm(8 * 196, 512, 4608, gpu),
            ConvTile::Small
        );
        // A short K is not split into chunks of fewer than four slices: 2 ways at most here.
        assert_eq!(
            ConvTile::split_for_gemm(64, 64, 128, gpu),
            ConvTile::SplitK(2)
        );
        assert_eq!(ConvTile::split_for_gemm(64, 64, 127, gpu), ConvTile::Small);
        // Names round-trip, as CROSSPOOL_CONV_TILE and the autotuning cache spell them.
        for t in [
            ConvTile::Small,
            ConvTile::Large,
            ConvTile::Large2,
            ConvTile::Whole,
            ConvTile::Coop,
            ConvTile::SplitK(2),
            ConvTile::SplitK(16),
        ] {
            assert_eq!(ConvTile::from_name(&t.name()), Some(t));
        }
        for bad in ["split1", "split65", "split", "splitx", "medium"] {
            assert_eq!(ConvTile::from_name(bad), None, "{bad}");
        }
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
    fn every_storage_variant_validates_and_keeps_the_params() {
        let both = [Dtype::F32, Dtype::F16];
        for (tile, shader) in [
            (ConvTile::Small, &shaders::CONV2D),
            (ConvTile::Large, &shaders::CONV2D_LARGE),
            (ConvTile::Large2, &shaders::CONV2D_LARGE),
            (ConvTile::Whole, &shaders::CONV2D_WHOLE_K),
        ] {
            for input in both {
                for output in both {
                    for weights in both {
                        let t = ConvTypes {
                            input,
                            output,
                            weights,
                        };
                        let v = t.shader(tile).unwrap();
                        assert_valid_spirv(&v);
                        assert_eq!(
                            v.needs_f16(),
                            t != ConvTypes {
                                input: Dtype::F32,
                                output: Dtype::F32,
                                weights: Dtype::F32
                            }
                        );
                        assert_eq!(
                            wgsl_struct_layout(&v, "ConvParams"),
                            wgsl_struct_layout(shader, "ConvParams")
                        );
                        let limit = if weights == Dtype::F16 {
                            "65504.0"
                        } else {
                            "3.40282347e38"
                        };
                        assert!(
                            v.source
                                .contains(&format!("const ACT_LIMIT: f32 = {limit};")),
                            "{t:?}"
                        );
                    }
                }
            }
        }
        // A rewrite of a line the shader lacks is an error, not a silent no-op.
        assert!(shaders::CONV2D
            .specialise(&[("alias nothing = f32;", "alias nothing = f16;")])
            .is_err());
    }

    /// The cooperative-matrix kernel cannot run on software Vulkan, so CI holds it to what can
    /// be checked without a GPU: every storage variant validates with naga and translates to
    /// SPIR-V that spirv-val accepts (naga 30's writer has panicked on some cooperative
    /// stores, and emitted device-scope atomics the memory model it declares forbids), and
    /// its parameters and constants are the host's.
    #[test]
    fn cooperative_kernel_validates_and_translates_to_spirv() {
        let coop = &shaders::CONV2D_COOP;
        assert!(coop.needs_cooperative_matrix() && coop.needs_f16());
        for input in [Dtype::F32, Dtype::F16] {
            for output in [Dtype::F32, Dtype::F16] {
                let t = ConvTypes {
                    input,
                    output,
                    weights: Dtype::F16,
                };
                let v = t.shader(ConvTile::Coop).unwrap();
                assert_eq!(v.source.matches("enable f16;").count(), 1, "{t:?}");
                assert_valid_spirv(&v);
                assert_eq!(
                    wgsl_struct_layout(&v, "ConvParams"),
                    wgsl_struct_layout(&shaders::CONV2D, "ConvParams")
                );
            }
        }
        for (name, v) in [
            ("BM", COOP_BM),
            ("BN", COOP_BN),
            ("BK", COOP_BK),
            ("WG", COOP_WG),
        ] {
            assert_eq!(wgsl_u32_const(coop, name), v, "{name}");
        }
        // 4 x 4 accumulators of 16 x 16 cover the tile; the gather gives every invocation
        // BM / 2 pixels of one k, the weight load BK * BN / WG values.
        assert_eq!((COOP_BM / 16, COOP_BN / 16, COOP_BK), (4, 4, 16));
        assert_eq!(COOP_WG, 2 * COOP_BK);
        // f32 weights are refused rather than read as f16.
        let f32s = ConvTypes {
            input: Dtype::F16,
            output: Dtype::F16,
            weights: Dtype::F32,
        };
        assert!(f32s.shader(ConvTile::Coop).is_err());
    }

    #[test]
    fn kernels_agree_within_twice_the_sum_bound_and_no_further() {
        let n = 100;
        let gamma = f32_gamma(n);
        let mag = [10.0f32, 1.0, 0.5];
        let exact = [3.0f32, -0.25, 0.125];
        // Just inside 2 gamma * magnitude: agree.
        let near: Vec<f32> = exact
            .iter()
            .zip(&mag)
            .map(|(v, m)| v + 1.9 * gamma * m)
            .collect();
        assert_eq!(agree_within_sum_bound(&near, &exact, &mag, n), Ok(()));
        // Three times it on one output: that output is named.
        let mut far = exact.to_vec();
        far[1] += 3.0 * gamma * mag[1];
        let e = agree_within_sum_bound(&far, &exact, &mag, n).unwrap_err();
        assert!(e.contains("output 1"), "{e}");
        // NaN never agrees; all zeros prove nothing; lengths must match.
        let mut nan = exact.to_vec();
        nan[2] = f32::NAN;
        assert!(agree_within_sum_bound(&nan, &exact, &mag, n).is_err());
        assert!(agree_within_sum_bound(&[0.0; 3], &[0.0; 3], &mag, n).is_err());
        assert!(agree_within_sum_bound(&exact[..2], &exact, &mag, n).is_err());
    }

    fn f32_gamma(n: usize) -> f32 {
        let nu = n as f64 * (f32::EPSILON as f64 / 2.0);
        (nu / (1.0 - nu)) as f32
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
    fn whole_k_constants_match_wgsl() {
        let whole = &shaders::CONV2D_WHOLE_K;
        for (name, v) in [
            ("BM", BM),
            ("BN", BN),
            ("K_MAX", WHOLE_K_MAX),
            ("WG_X", WG_X),
            ("WG_Y", WG_Y),
            ("THREADS", THREADS),
        ] {
            assert_eq!(wgsl_u32_const(whole, name), v, "{name}");
        }
        // 256 threads stage K_MAX x 64 of A and of B, 8 values each; a 4 x 4 block a thread.
        assert_eq!(WHOLE_K_MAX * BM, 8 * THREADS);
        assert_eq!(WHOLE_K_MAX * BN, 8 * THREADS);
        assert_eq!(wgsl_u32_const(whole, "A_ROW"), BM / 4 + 1);
        assert_eq!(
            wgsl_struct_layout(whole, "ConvParams"),
            wgsl_struct_layout(&shaders::CONV2D, "ConvParams")
        );
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
