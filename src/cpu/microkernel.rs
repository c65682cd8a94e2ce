//! The register tile both AVX convolution kernels (`direct_conv`, `winograd`) run on: `MR`
//! output pixels by the `NR` output channels of one weight panel, accumulated over a window
//! of input values read in place. One layout for both instruction sets, chosen at run time:
//!
//! - AVX-512F: the whole 14 x 32 tile in 28 zmm accumulators (2 weight vectors, 1 broadcast:
//!   31 of 32 registers), one pass over the window.
//! - AVX2 + FMA (16 ymm registers): sub-tiles of 6 pixels x 16 channels (12 accumulators),
//!   three pixel groups (6, 6, 2) for each half of the panel; the window is read six times
//!   from cache instead of once, the weights three times.

pub(super) use super::conv::Simd;
use std::arch::x86_64::*;

/// Output pixels per tile.
pub(super) const MR: usize = 14;
/// Output channels per tile: one weight panel.
pub(super) const NR: usize = 32;

/// 64-byte aligned lanes, so each weight row of a panel sits in one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Lanes(pub(super) [f32; 16]);

/// The output pointer shared by tasks that write disjoint pixels and channels, and the
/// residual shortcut (null if none) added before ReLU, laid out as the output.
#[derive(Clone, Copy)]
pub(super) struct OutPtr {
    out: *mut f32,
    shortcut: *const f32,
}
// SAFETY: the kernels' tasks write disjoint parts of the output (see their `run`) and only
// read the shortcut.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Points at `output` and, if given, the `shortcut` of the same length.
    pub(super) fn new(output: &mut [f32], shortcut: Option<&[f32]>) -> Self {
        debug_assert!(shortcut.is_none_or(|s| s.len() == output.len()));
        OutPtr {
            out: output.as_mut_ptr(),
            shortcut: shortcut.map_or(std::ptr::null(), <[f32]>::as_ptr),
        }
    }

    /// Output element `i` and the shortcut's (null if none).
    ///
    /// # Safety
    /// `i` is within the output.
    pub(super) unsafe fn at(self, i: usize) -> (*mut f32, *const f32) {
        (self.out.add(i), shortcut_at(self.shortcut, i))
    }
}

/// `p + i`, or null for a null `p` (no shortcut).
///
/// # Safety
/// A non-null `p` has `i` elements after it.
#[inline(always)]
pub(super) unsafe fn shortcut_at(p: *const f32, i: usize) -> *const f32 {
    if p.is_null() {
        p
    } else {
        p.add(i)
    }
}

/// Where a tile's input values are: pixel windows `px_stride` floats apart, each `kh` rows
/// `row_stride` apart of `window_row` contiguous values. In a padded block a window row's
/// `kw` taps of `c` channels are contiguous, in the order the weights are packed, so one loop
/// runs over them.
#[derive(Clone, Copy)]
pub(super) struct TileGeometry {
    pub(super) px_stride: usize,
    pub(super) row_stride: usize,
    pub(super) kh: usize,
    pub(super) window_row: usize,
}

/// One tile: `pixels` (at most `MR`) output pixels laid out as `geometry` says, by the
/// channels of one weight panel `b` (`kh * window_row` rows of `NR`), plus `bias` and optional
/// ReLU; the first `cols` channels are stored, pixels `out_stride` floats apart, with the
/// `shortcut` (null if none, laid out as `out`) added before ReLU. (The AVX2 code
/// describes its sub-tiles the same way.)
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub(super) a: *const f32,
    pub(super) geometry: TileGeometry,
    pub(super) b: *const f32,
    pub(super) bias: *const f32,
    pub(super) relu: bool,
    pub(super) out: *mut f32,
    pub(super) shortcut: *const f32,
    pub(super) out_stride: usize,
    pub(super) pixels: usize,
    pub(super) cols: usize,
}

/// Computes and stores tile `t` on `simd`.
///
/// # Safety
/// `simd` is available; `t.a` has `MR` pixels' windows readable; `t.b` is a 64-byte aligned
/// panel and `t.bias` 64-byte aligned `NR` floats; `t.out` has `t.pixels` rows of `t.cols`
/// writable.
pub(super) unsafe fn tile(simd: Simd, t: Tile) {
    debug_assert!(t.pixels <= MR && t.cols <= NR);
    match simd {
        Simd::Avx512 => tile_avx512(t),
        Simd::Avx2 => tile_avx2(t),
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(t: Tile) {
    let TileGeometry {
        px_stride,
        row_stride,
        kh,
        window_row,
    } = t.geometry;
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    let mut bp = t.b;
    for ky in 0..kh {
        let ap = t.a.add(ky * row_stride);
        for j in 0..window_row {
            let b0 = _mm512_load_ps(bp);
            let b1 = _mm512_load_ps(bp.add(16));
            for i in 0..MR {
                let av = _mm512_set1_ps(*ap.add(i * px_stride + j));
                acc[2 * i] = _mm512_fmadd_ps(av, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm512_fmadd_ps(av, b1, acc[2 * i + 1]);
            }
            bp = bp.add(NR);
        }
    }
    let bias0 = _mm512_load_ps(t.bias);
    let bias1 = _mm512_load_ps(t.bias.add(16));
    let zero = _mm512_setzero_ps();
    let mask = if t.cols == NR {
        u32::MAX
    } else {
        (1u32 << t.cols) - 1
    };
    let (m0, m1) = (mask as u16, (mask >> 16) as u16);
    for i in 0..t.pixels {
        let mut v0 = _mm512_add_ps(acc[2 * i], bias0);
        let mut v1 = _mm512_add_ps(acc[2 * i + 1], bias1);
        if !t.shortcut.is_null() {
            let s = t.shortcut.add(i * t.out_stride);
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, s));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, s.add(16)));
        }
        if t.relu {
            v0 = _mm512_max_ps(v0, zero);
            v1 = _mm512_max_ps(v1, zero);
        }
        let o = t.out.add(i * t.out_stride);
        _mm512_mask_storeu_ps(o, m0, v0);
        _mm512_mask_storeu_ps(o.add(16), m1, v1);
    }
}

/// Pixels of an AVX2 sub-tile.
const MR_AVX2: usize = 6;

#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(t: Tile) {
    for half in 0..2 {
        let cols = t.cols.saturating_sub(16 * half).min(16);
        if cols == 0 {
            break;
        }
        for p0 in (0..t.pixels).step_by(MR_AVX2) {
            let sub = Tile {
                a: t.a.add(p0 * t.geometry.px_stride),
                b: t.b.add(16 * half),
                bias: t.bias.add(16 * half),
                out: t.out.add(p0 * t.out_stride + 16 * half),
                shortcut: shortcut_at(t.shortcut, p0 * t.out_stride + 16 * half),
                pixels: MR_AVX2.min(t.pixels - p0),
                cols,
                ..t
            };
            // Whole groups of 6, and 2 for the last of a 14-pixel tile; other remainders
            // (partial tiles at a row's end) compute 6 and store fewer.
            if sub.pixels <= 2 {
                sub_tile_avx2::<2>(sub);
            } else {
                sub_tile_avx2::<MR_AVX2>(sub);
            }
        }
    }
}

/// `R` pixels (at most 6) by 16 channels of a panel (rows `NR` apart): `2 * R` ymm
/// accumulators; stores `s.pixels` pixels' first `s.cols` (at most 16) channels.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn sub_tile_avx2<const R: usize>(s: Tile) {
    let TileGeometry {
        px_stride,
        row_stride,
        kh,
        window_row,
    } = s.geometry;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let mut bp = s.b;
    for ky in 0..kh {
        let ap = s.a.add(ky * row_stride);
        for j in 0..window_row {
            let b0 = _mm256_load_ps(bp);
            let b1 = _mm256_load_ps(bp.add(8));
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(i * px_stride + j));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
            bp = bp.add(NR);
        }
    }
    let bias = [_mm256_load_ps(s.bias), _mm256_load_ps(s.bias.add(8))];
    let zero = _mm256_setzero_ps();
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let masks = [
        _mm256_cmpgt_epi32(_mm256_set1_epi32(s.cols.min(8) as i32), lane),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(s.cols.saturating_sub(8) as i32), lane),
    ];
    for (i, acc) in acc.iter().enumerate().take(s.pixels) {
        let o = s.out.add(i * s.out_stride);
        for q in 0..2 {
            let mut v = _mm256_add_ps(acc[q], bias[q]);
            if !s.shortcut.is_null() {
                let r = s.shortcut.add(i * s.out_stride + 8 * q);
                v = _mm256_add_ps(v, _mm256_maskload_ps(r, masks[q]));
            }
            if s.relu {
                v = _mm256_max_ps(v, zero);
            }
            _mm256_maskstore_ps(o.add(8 * q), masks[q], v);
        }
    }
}
