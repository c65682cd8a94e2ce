//! Convolution on AMX tiles in bf16 (`--precision bf16` on the CPU backend): weights and
//! input values rounded to bf16 (round to nearest even), their products summed in f32 by
//! `TDPBF16PS`. An AMX unit multiplies a 16 x 32 by a 32 x 16 bf16 tile in one instruction,
//! about 14 times what AVX-512 FMAs give a core in f32 here (docs/benchmarks.md), where
//! AVX-512's own `VDPBF16PS` gives half the FMA rate, so this is the bf16 kernel.
//!
//! The convolution is an implicit GEMM over a zero-padded bf16 copy of a band of input rows,
//! `wp = out_w + kw - 1` pixels wide: output pixel `q = r * wp + x` of the band reads the
//! block at `q + ky * wp + kx` for tap `(ky, kx)`, so 16 consecutive output pixels under one
//! tap are 16 rows `in_c` values apart, which `TILELOADD` reads in place (its stride), also
//! across row ends. The `kw - 1` columns past each output row are computed and dropped (2 of
//! 16 at VGG's conv5). Each step multiplies 32 pixels by 32 input channels by 32 output
//! channels in four accumulator tiles. Only stride-1 layers with a multiple of 32 input
//! channels run here (all of VGG's but the first, AlexNet's conv2 to conv5); the others run
//! the f32 kernels.
//!
//! AMX needs Linux to grant the process its tile state (`arch_prctl`); each task loads the
//! tile configuration and releases the tiles when it ends.

use super::direct_conv::for_each_block;
use super::microkernel::OutPtr;
use crate::shape::{Conv2dSpec, Shape4};
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Output channels per panel: two tiles of 16 columns.
const NP: usize = 32;
/// Input channels per step: one tile row of 32 bf16 (64 bytes).
const KC: usize = 32;
/// Output pixels per step: two tiles of 16 rows.
const PX: usize = 32;
/// Bytes of bf16 input block a task aims for: it stays in L2 beside a panel's weights
/// (9 * 512 * 32 bf16, 288 KiB at conv5), which every pixel block of the task reads.
const BLOCK_BYTES: usize = 384 << 10;

/// One 64-byte line: a tile row of 32 bf16.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes (tmm0-3: 16 x 16
/// f32 accumulators; tmm4-5: 16 pixels x 32 bf16; tmm6-7: 16 pairs of rows x 16 columns).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

thread_local! {
    /// Each thread's bf16 input block, kept between calls.
    static BLOCK: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU and OS run the kernel: AMX-BF16 and AMX-TILE, AVX512-BF16 for the
/// conversions, tile state enabled by the OS and granted to this process (asked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bf16")
            && cpu_has_amx_bf16()
            && os_grants_tiles()
    })
}

/// CPUID leaf 7: EDX bit 22 (AMX-BF16) and bit 24 (AMX-TILE).
fn cpu_has_amx_bf16() -> bool {
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only where leaf 0 lists it.
    #[allow(unused_unsafe)]
    let (max, l7) = unsafe { (__cpuid(0).eax, __cpuid_count(7, 0)) };
    max >= 7 && l7.edx & (1 << 22) != 0 && l7.edx & (1 << 24) != 0
}

/// XCR0 bits 17 and 18 (the OS saves tile configuration and data), and on Linux the
/// process's permission to use tile data.
fn os_grants_tiles() -> bool {
    // SAFETY: as above; XGETBV runs only where CPUID says the OS enabled XSAVE (bit 27).
    #[allow(unused_unsafe)]
    let osxsave = unsafe { __cpuid(1).ecx } & (1 << 27) != 0;
    if !osxsave {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0; it touches no memory.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack, preserves_flags))
    };
    lo & (3 << 17) == 3 << 17 && request_tile_permission()
}

/// Linux hands tile data state to a process only when it asks, once for all its threads:
/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`.
#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;
    let ret: i64;
    // SAFETY: the arch_prctl system call with integer arguments; it writes no user memory.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        )
    };
    ret == 0
}

/// Other systems: not tried, so not used.
#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// f32 to bf16, rounding to nearest even (as `VCVTNEPS2BF16` does; `half` rounds the same).
fn bf16_bits(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

/// A stride-1 convolution layer with its weights in bf16 for [`AmxConv::run`].
pub struct AmxConv {
    spec: Conv2dSpec,
    panels: usize,
    /// `[panel][in_c / KC][tap][half][KC / 2][16][2]`: for each 16-column half of a panel, a
    /// tile of 16 rows, row `kp` holding input channels `2kp` and `2kp + 1` of each column
    /// side by side (the pair layout `TDPBF16PS` multiplies); zero past `out_c`.
    weights: Vec<Line>,
    /// `[panel * NP]`, zero past `out_c`.
    bias: Vec<f32>,
}

impl AmxConv {
    /// Whether the layer is one this kernel runs: stride 1, input channels a multiple of 32.
    pub fn suits(spec: &Conv2dSpec) -> bool {
        let w = spec.window;
        (w.stride_h, w.stride_w) == (1, 1) && spec.in_c.is_multiple_of(KC) && spec.in_c > 0
    }

    /// Rounds `weight(o, i, ky, kx)` to bf16 and packs it with the bias; `spec` must suit.
    pub fn new(
        spec: Conv2dSpec,
        weight: impl Fn(usize, usize, usize, usize) -> f32,
        bias: &[f32],
    ) -> Self {
        debug_assert!(Self::suits(&spec));
        let (c, n, win) = (spec.in_c, spec.out_c, spec.window);
        let (taps, chunks, panels) = (win.kh * win.kw, c / KC, n.div_ceil(NP));
        let mut weights = vec![Line([0; 32]); panels * taps * chunks * 2 * 16];
        let mut packed_bias = vec![0.0; panels * NP];
        packed_bias[..n].copy_from_slice(&bias[..n]);
        for o in 0..n {
            let (p, half, col) = (o / NP, (o % NP) / 16, o % 16);
            for tap in 0..taps {
                let (ky, kx) = (tap / win.kw, tap % win.kw);
                for i in 0..c {
                    let (cc, kp, e) = (i / KC, (i % KC) / 2, i % 2);
                    let tile = ((p * chunks + cc) * taps + tap) * 2 + half;
                    weights[tile * 16 + kp].0[2 * col + e] = bf16_bits(weight(o, i, ky, kx));
                }
            }
        }
        AmxConv {
            spec,
            panels,
            weights,
            bias: packed_bias,
        }
    }

    /// `output = conv(input)` with bias, the `shortcut` if any (laid out as the output) and
    /// optional ReLU, NHWC; `out` is the output shape and the slices hold exactly their
    /// shapes' values (the caller checks).
    pub fn run(
        &self,
        input: &[f32],
        shape: Shape4,
        shortcut: Option<&[f32]>,
        out: Shape4,
        output: &mut [f32],
    ) {
        assert!(available(), "AMX-BF16 is not available");
        let (c, win) = (shape.c, self.spec.window);
        let wp = out.w + win.kw - 1;
        // Bands of output rows: at least one step's pixels, as many as keep the block in L2.
        let min_rows = PX.div_ceil(wp).min(out.h);
        let rows = (BLOCK_BYTES / (2 * c * wp)).clamp(min_rows, out.h);
        let dst = OutPtr::new(output, shortcut);
        for_each_block(
            out.n,
            (out.h, out.h.div_ceil(rows)),
            self.panels,
            |img, oy, panels| {
                let pixels = oy.len() * wp;
                let steps = pixels.div_ceil(PX);
                BLOCK.with(|block| {
                    let mut block = block.borrow_mut();
                    // The last step reads up to (kh - 1) rows and kw - 1 pixels past its pixels.
                    let total = steps * PX + (win.kh - 1) * wp + win.kw - 1;
                    self.fill_block(input, shape, img, oy.start, wp, total, &mut block);
                    let band = Band {
                        block: &block,
                        wp,
                        pixels,
                        img,
                        oy0: oy.start,
                        out,
                        dst,
                    };
                    // SAFETY: AMX is available (checked above); the block holds `total` pixels
                    // of `c` values; this task alone writes rows `oy` of image img in these
                    // panels.
                    unsafe { self.band_panels(&band, panels) };
                });
            },
        );
    }

    /// Writes the input rows the output rows from `oy0` read into `block` as bf16, zero-padded
    /// to `wp` pixels a row (`pad_w` zero columns on the left), `total` pixels in all.
    #[allow(clippy::too_many_arguments)]
    fn fill_block(
        &self,
        input: &[f32],
        shape: Shape4,
        img: usize,
        oy0: usize,
        wp: usize,
        total: usize,
        block: &mut Vec<u16>,
    ) {
        let (c, win) = (shape.c, self.spec.window);
        // Every value is written below, so the block is only grown, never cleared: zeroing
        // it all first would add a third to this pass's memory traffic.
        if block.len() < total * c {
            block.resize(total * c, 0);
        }
        let block = &mut block[..total * c];
        let first = win.pad_w.min(wp);
        let copied = shape.w.min(wp - first);
        let rows = total / wp;
        for (r, row) in block.chunks_exact_mut(wp * c).take(rows).enumerate() {
            let iy = (oy0 + r) as isize - win.pad_h as isize;
            if iy < 0 || iy >= shape.h as isize || copied == 0 {
                row.fill(0);
                continue;
            }
            let (left, rest) = row.split_at_mut(first * c);
            let (inside, right) = rest.split_at_mut(copied * c);
            left.fill(0);
            to_bf16(
                &input[shape.index(img, iy as usize, 0, 0)..][..copied * c],
                inside,
            );
            right.fill(0);
        }
        block[rows * wp * c..].fill(0);
    }

    /// All steps of a band for the panels `panels`: per panel, for each 32 pixels, the four
    /// accumulator tiles over every tap and 32-channel chunk, then bias, ReLU and the store.
    ///
    /// # Safety
    /// AMX is available; `band.block` holds the band's padded pixels up to the last step's
    /// reads; no other thread writes the band's output rows in these panels.
    unsafe fn band_panels(&self, band: &Band<'_>, panels: std::ops::Range<usize>) {
        let (c, win) = (self.spec.in_c, self.spec.window);
        let (taps, chunks) = (win.kh * win.kw, c / KC);
        let a_stride = 2 * c;
        let mut acc = Accumulators([[0.0; NP]; PX]);
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
        for p in panels {
            let w = self.weights[p * taps * chunks * 2 * 16..].as_ptr();
            for q0 in (0..band.pixels).step_by(PX) {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nomem, nostack, preserves_flags)
                );
                // Taps inside chunks: the taps of one chunk read rows one pixel or one row
                // apart, so their lines come from L1 after the first.
                let mut b0 = w;
                for cc in 0..chunks {
                    let a = band.block.as_ptr().add(q0 * c + cc * KC);
                    for tap in 0..taps {
                        let (ky, kx) = (tap / win.kw, tap % win.kw);
                        let a0 = a.add((ky * band.wp + kx) * c);
                        step(a0, a0.add(16 * c), a_stride, b0, b0.add(16));
                        b0 = b0.add(32);
                    }
                }
                let o = acc.0.as_mut_ptr() as *mut f32;
                asm!(
                    "tilestored [{o} + {s}*1], tmm0",
                    "tilestored [{o1} + {s}*1], tmm1",
                    "tilestored [{o2} + {s}*1], tmm2",
                    "tilestored [{o3} + {s}*1], tmm3",
                    o = in(reg) o,
                    o1 = in(reg) o.add(16),
                    o2 = in(reg) o.add(16 * NP),
                    o3 = in(reg) o.add(16 * NP + 16),
                    s = in(reg) NP * 4,
                    options(nostack, preserves_flags)
                );
                self.store(band, p, q0, &acc);
            }
        }
        asm!("tilerelease", options(nomem, nostack, preserves_flags));
    }

    /// Bias (and ReLU) on one step's accumulators, stored at the valid output pixels.
    ///
    /// # Safety
    /// As [`Self::band_panels`] (which makes AVX-512F a given).
    #[target_feature(enable = "avx512f")]
    unsafe fn store(&self, band: &Band<'_>, p: usize, q0: usize, acc: &Accumulators) {
        let cols = NP.min(self.spec.out_c - p * NP);
        let mask = if cols == NP {
            u32::MAX
        } else {
            (1u32 << cols) - 1
        };
        let (m0, m1) = (mask as u16, (mask >> 16) as u16);
        let bias = self.bias[p * NP..].as_ptr();
        let (b0, b1) = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)));
        let zero = _mm512_setzero_ps();
        let (mut r, mut x) = (q0 / band.wp, q0 % band.wp);
        for row in acc.0.iter().take(band.pixels - q0) {
            if x < band.out.w {
                let mut v0 = _mm512_add_ps(_mm512_loadu_ps(row.as_ptr()), b0);
                let mut v1 = _mm512_add_ps(_mm512_loadu_ps(row.as_ptr().add(16)), b1);
                let (o, s) = band
                    .dst
                    .at(band.out.index(band.img, band.oy0 + r, x, p * NP));
                if !s.is_null() {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, s));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, s.add(16)));
                }
                if self.spec.relu {
                    // NaN becomes 0 (the second operand), as `f32::max` makes it in the
                    // other kernels' ReLU.
                    v0 = _mm512_max_ps(v0, zero);
                    v1 = _mm512_max_ps(v1, zero);
                }
                _mm512_mask_storeu_ps(o, m0, v0);
                _mm512_mask_storeu_ps(o.add(16), m1, v1);
            }
            x += 1;
            if x == band.wp {
                (r, x) = (r + 1, 0);
            }
        }
    }
}

/// A band's padded bf16 input and where its outputs go.
struct Band<'a> {
    block: &'a [u16],
    wp: usize,
    pixels: usize,
    img: usize,
    oy0: usize,
    out: Shape4,
    dst: OutPtr,
}

/// One step's 32 pixels x 32 output channels, as the tiles store them.
#[repr(C, align(64))]
struct Accumulators([[f32; NP]; PX]);

/// One step: pixels `a0` (16 rows `a_stride` bytes apart) and `a1` (the next 16) by the
/// 32 input channels at each, times the panel halves `b0` and `b1`, into tmm0-3.
///
/// # Safety
/// The tiles are configured as [`CONFIG`]; the 16 rows of each operand are readable.
#[inline(always)]
unsafe fn step(a0: *const u16, a1: *const u16, a_stride: usize, b0: *const Line, b1: *const Line) {
    asm!(
        "tileloadd tmm4, [{a0} + {sa}*1]",
        "tileloadd tmm5, [{a1} + {sa}*1]",
        "tileloadd tmm6, [{b0} + {sb}*1]",
        "tileloadd tmm7, [{b1} + {sb}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        a0 = in(reg) a0,
        a1 = in(reg) a1,
        sa = in(reg) a_stride,
        b0 = in(reg) b0,
        b1 = in(reg) b1,
        sb = in(reg) 64usize,
        options(nostack, readonly, preserves_flags)
    );
}

/// `src` rounded to bf16 (nearest even) into `dst`, 16 values an instruction.
fn to_bf16(src: &[f32], dst: &mut [u16]) {
    debug_assert_eq!(src.len(), dst.len());
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn convert(src: &[f32], dst: &mut [u16]) {
        let whole = src.len() / 16 * 16;
        for (s, d) in src[..whole].chunks_exact(16).zip(dst.chunks_exact_mut(16)) {
            let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.as_ptr()));
            let bits = std::mem::transmute::<__m256bh, __m256i>(v);
            _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, bits);
        }
        for (s, d) in src[whole..].iter().zip(&mut dst[whole..]) {
            *d = bf16_bits(*s);
        }
    }
    // SAFETY: only called from `AmxConv::run`, which checks `available()` (AVX512-BF16).
    unsafe { convert(src, dst) }
}
