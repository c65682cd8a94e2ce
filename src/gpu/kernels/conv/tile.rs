//! The convolution tiles: what each computes per workgroup, their names, and the size rule
//! that picks one for a layer where autotuning does not.

use crate::error::{Error, Result};
use crate::gpu::shaders::{shader, Shader};
use crate::gpu::GpuContext;

/// Implicit-GEMM convolution with bias and optional ReLU: the small tile (and split-K's
/// first pass).
pub const CONV2D: Shader = shader!("conv2d.wgsl", "conv2d_params.wgsl", "conv2d_prelude.wgsl");
/// The 128 x 128 tile variant of [`CONV2D`].
pub const CONV2D_LARGE: Shader = shader!(
    "conv2d_large.wgsl",
    "conv2d_params.wgsl",
    "conv2d_prelude.wgsl"
);
/// [`CONV2D`] for layers whose whole K fits one stage (the RGB first layer).
pub const CONV2D_WHOLE_K: Shader = shader!(
    "conv2d_whole_k.wgsl",
    "conv2d_params.wgsl",
    "conv2d_prelude.wgsl"
);
/// Split-K's second pass for [`CONV2D`]: adds up the partial sums, with the epilogue.
pub const CONV2D_SPLITK_REDUCE: Shader = shader!("conv2d_splitk_reduce.wgsl");
/// [`CONV2D`] on cooperative matrices (tensor cores): f16 operands, f32 sums.
pub const CONV2D_COOP: Shader = shader!(
    "conv2d_coop.wgsl",
    "coop_enables.wgsl",
    "conv2d_params.wgsl"
);

/// Every source of the family (the test that every file in `shaders/` is compiled in reads it).
pub const SHADERS: &[Shader] = &[
    CONV2D,
    CONV2D_LARGE,
    CONV2D_WHOLE_K,
    CONV2D_SPLITK_REDUCE,
    CONV2D_COOP,
];

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

    /// The tile `CROSSPOOL_CONV_TILE` forces (`small`, `large`, `large2`, `whole`, `splitN`,
    /// `coop`: for the layers with f16 weights), or `None` for the choice per layer (unset or
    /// `auto`).
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var("CROSSPOOL_CONV_TILE").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(None),
            Ok(name) => Self::from_name(name).map(Some).ok_or_else(|| {
                Error::Config(format!(
                    "CROSSPOOL_CONV_TILE={name} is not one of auto, small, large, large2, whole, split2 .. split64, coop"
                ))
            }),
        }
    }

    /// Every scalar tile that can run a layer of `k_total`-deep K, for checking them all
    /// (`crosspool selftest`, the tests): the small, large and double-buffered large tiles,
    /// K split 2, an odd 5 (chunks that end mid-slice) and 16 ways, and whole-K where K fits.
    /// The cooperative tile is left out: it needs f16 weights and a device that has it.
    pub fn every_scalar(k_total: usize) -> Vec<ConvTile> {
        let mut t = vec![
            ConvTile::Small,
            ConvTile::Large,
            ConvTile::Large2,
            ConvTile::SplitK(2),
            ConvTile::SplitK(5),
            ConvTile::SplitK(16),
        ];
        if k_total <= WHOLE_K_MAX as usize {
            t.push(ConvTile::Whole);
        }
        t
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

    /// Whether this tile's kernel declares split-K's partial sums (binding 5): the small
    /// kernel, which split-K's first pass is.
    pub(super) fn binds_partial_sums(self) -> bool {
        match self {
            ConvTile::Small | ConvTile::SplitK(_) => true,
            ConvTile::Large | ConvTile::Large2 | ConvTile::Whole | ConvTile::Coop => false,
        }
    }

    /// The override constants this tile sets in its kernel: the double-buffered large tile
    /// is the large kernel with two stages.
    pub(super) fn constants(self) -> &'static [(&'static str, f64)] {
        match self {
            ConvTile::Large2 => &[("STAGES", 2.0)],
            ConvTile::Small
            | ConvTile::Large
            | ConvTile::Whole
            | ConvTile::Coop
            | ConvTile::SplitK(_) => &[],
        }
    }

    /// The WGSL source of this tile's kernel.
    pub(super) fn shader(self) -> &'static Shader {
        match self {
            ConvTile::Small | ConvTile::SplitK(_) => &CONV2D,
            ConvTile::Large | ConvTile::Large2 => &CONV2D_LARGE,
            ConvTile::Whole => &CONV2D_WHOLE_K,
            ConvTile::Coop => &CONV2D_COOP,
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
pub const COOP_WG: u32 = crate::gpu::runtime::context::COOPERATIVE_SUBGROUP;
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
