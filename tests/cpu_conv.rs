//! The CPU backend's convolution kernels against the CPU reference, on the shapes the GPU
//! kernel is tested on (odd sizes, 3/17/513 channels, strides, padding wider than the
//! kernel, batches), on shapes that split into several im2col bands, and on shapes that take
//! each of the AVX-512 kernel's paths (tiles along rows with a partial last tile, several row
//! blocks, channel panels split across tasks, narrow outputs through unfolded blocks), with
//! the same f32 rounding bound; and the Winograd kernel on 3x3 layers (odd sizes, padding 0 to
//! 2, bands of tile rows, narrow outputs) with its own derived bound. Every kernel this CPU
//! runs is tested; with
//! `CROSSPOOL_REQUIRE_AVX512=1` (as CI sets) a CPU without AVX-512F fails instead of testing
//! only the portable kernel.

mod common;

use common::{assert_reduction_close, random};
use crosspool::cpu::{ConvKernel, CpuConv2d, Products, Simd};
use crosspool::reference::{self, Reduced};
use crosspool::shape::{Conv2dSpec, Shape4, Window2d};
use crosspool::weights::Conv2dWeights;

/// The kernels to test on this CPU: all it runs (an AVX-512 CPU runs the AVX2 ones too).
fn kernels() -> Vec<ConvKernel> {
    if std::env::var("CROSSPOOL_REQUIRE_AVX512").is_ok_and(|v| v == "1") {
        assert!(
            Simd::Avx512.is_available(),
            "CROSSPOOL_REQUIRE_AVX512=1 but this CPU lacks AVX-512F"
        );
    }
    ConvKernel::available()
}

/// Bᵀ, G and Aᵀ of a Winograd variant F(m x m, 3x3), with α = m + 2 (row-major: α x α,
/// α x 3, m x α), written out here apart from the kernel's copies.
struct Transforms {
    m: usize,
    bt: &'static [f64],
    g: &'static [f64],
    at: &'static [f64],
}

#[rustfmt::skip]
const F2: Transforms = Transforms {
    m: 2,
    bt: &[
        1.0, 0.0, -1.0, 0.0,
        0.0, 1.0, 1.0, 0.0,
        0.0, -1.0, 1.0, 0.0,
        0.0, 1.0, 0.0, -1.0,
    ],
    g: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
    at: &[
        1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4x4, 3x3) on the points 0, ±1, ±2 (Lavin & Gray 2016).
#[rustfmt::skip]
const F4: Transforms = Transforms {
    m: 4,
    bt: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    g: &[
        0.25, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

impl Transforms {
    fn alpha(&self) -> usize {
        self.m + 2
    }

    /// Roundings in one pass of a transform of rows `cols` wide: a row of k non-zero terms
    /// is k - 1 additions, plus one product when a coefficient is not a power of two (the
    /// kernel multiplies unfused; ±2ⁿ scales exactly).
    fn pass_roundings(matrix: &[f64], cols: usize) -> usize {
        matrix
            .chunks(cols)
            .map(|row| {
                let terms: Vec<f64> = row.iter().copied().filter(|&c| c != 0.0).collect();
                let inexact = terms.iter().any(|c| c.abs().log2().fract() != 0.0);
                terms.len().saturating_sub(1) + usize::from(inexact)
            })
            .max()
            .unwrap_or(0)
    }

    /// The roundings every term of an output passes through: two passes of Bᵀ, one rounding
    /// of the f64-exact weight transform, `in_c` fused multiply-adds over the channels, two
    /// passes of Aᵀ and the bias. F(2x2): in_c + 8; F(4x4): in_c + 16.
    fn roundings(&self, in_c: usize) -> usize {
        let a = self.alpha();
        2 * Self::pass_roundings(self.bt, a) + 1 + in_c + 2 * Self::pass_roundings(self.at, a) + 1
    }
}

/// The scale of the Winograd kernel's rounding error at each output: the computation with
/// every transform, weight and input replaced by its absolute value (plus |bias|). Each term
/// of an output passes through at most `t.roundings(in_c)` roundings, so the error is at
/// most `gamma(t.roundings(in_c))` times this (Higham, Lemma 3.3 and §3.1).
#[allow(clippy::needless_range_loop)] // the transforms' index notation
fn winograd_magnitude(x: &[f32], shape: Shape4, w: &Conv2dWeights, t: &Transforms) -> Vec<f32> {
    let s = w.spec;
    let out = s.output_shape(shape).unwrap();
    let (c, n, pad) = (s.in_c, s.out_c, s.window.pad_h as isize);
    let (m, al) = (t.m, t.alpha());
    let (bt, g, at) = (
        |i: usize, j: usize| t.bt[i * al + j].abs(),
        |i: usize, j: usize| t.g[i * 3 + j].abs(),
        |i: usize, j: usize| t.at[i * al + j].abs(),
    );
    // Ũ[ξ][o][i] = (|G| |g| |G|ᵀ)[ξ]
    let mut u = vec![0.0f64; al * al * n * c];
    for o in 0..n {
        for i in 0..c {
            for a in 0..al {
                for b in 0..al {
                    let mut v = 0.0;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            v += g(a, ky) * (w.at(o, i, ky, kx) as f64).abs() * g(b, kx);
                        }
                    }
                    u[((a * al + b) * n + o) * c + i] = v;
                }
            }
        }
    }
    let at_input = |img: usize, y: isize, xx: isize, ch: usize| -> f64 {
        if y < 0 || xx < 0 || y >= shape.h as isize || xx >= shape.w as isize {
            0.0
        } else {
            (x[shape.index(img, y as usize, xx as usize, ch)] as f64).abs()
        }
    };
    let mut mag = vec![0.0f32; out.len()];
    for img in 0..out.n {
        for tr in 0..out.h.div_ceil(m) {
            for tc in 0..out.w.div_ceil(m) {
                // Ṽ[ξ][i] = (|Bᵀ| |d| |B|)[ξ] for this tile's patch.
                let mut v = vec![0.0f64; al * al * c];
                for i in 0..c {
                    for a in 0..al {
                        for b in 0..al {
                            let mut sum = 0.0;
                            for dy in 0..al {
                                for dx in 0..al {
                                    let d = at_input(
                                        img,
                                        (m * tr + dy) as isize - pad,
                                        (m * tc + dx) as isize - pad,
                                        i,
                                    );
                                    sum += bt(a, dy) * d * bt(b, dx);
                                }
                            }
                            v[(a * al + b) * c + i] = sum;
                        }
                    }
                }
                for o in 0..n {
                    let mut prod = vec![0.0f64; al * al];
                    for (xi, mx) in prod.iter_mut().enumerate() {
                        *mx = (0..c)
                            .map(|i| u[(xi * n + o) * c + i] * v[xi * c + i])
                            .sum();
                    }
                    for dy in 0..m {
                        for dx in 0..m {
                            let (oy, ox) = (m * tr + dy, m * tc + dx);
                            if oy >= out.h || ox >= out.w {
                                continue;
                            }
                            let mut y = (w.bias[o] as f64).abs();
                            for a in 0..al {
                                for b in 0..al {
                                    y += at(dy, a) * at(dx, b) * prod[a * al + b];
                                }
                            }
                            mag[out.index(img, oy, ox, o)] = y as f32;
                        }
                    }
                }
            }
        }
    }
    mag
}

/// Seeded weights of `spec` (He-scaled, so activations keep their size) and an input.
fn seeded_layer(input: Shape4, spec: Conv2dSpec, seed: u64) -> (Conv2dWeights, Vec<f32>) {
    let scale = (2.0 / spec.k_total() as f32).sqrt();
    let w: Vec<f32> = random(spec.weight_len(), seed)
        .iter()
        .map(|v| v * scale)
        .collect();
    let w = Conv2dWeights::new(spec, w, random(spec.out_c, seed + 1)).unwrap();
    (w, random(input.len(), seed + 2))
}

fn check(input: Shape4, spec: Conv2dSpec, seed: u64, what: &str) {
    let (w, x) = seeded_layer(input, spec, seed);
    let (out_shape, want) = reference::conv2d(&x, input, &w).unwrap();
    for kernel in kernels() {
        let layer = CpuConv2d::with_kernel(&w, kernel).unwrap();
        let mut got = vec![f32::NAN; out_shape.len()];
        assert_eq!(layer.run(&x, input, &mut got).unwrap(), out_shape);
        // Winograd runs only 3x3 stride-1 layers with whole vectors of input channels; the
        // others run direct.
        let winograd_suits = (spec.window.kh, spec.window.kw) == (3, 3)
            && (spec.window.stride_h, spec.window.stride_w) == (1, 1)
            && spec.in_c.is_multiple_of(16);
        let expected = match kernel {
            ConvKernel::WinogradMixed(simd)
            | ConvKernel::Winograd(simd)
            | ConvKernel::Winograd4(simd)
                if !winograd_suits =>
            {
                ConvKernel::Direct(simd)
            }
            other => other,
        };
        assert_eq!(layer.kernel(), expected, "{what}: asked for {kernel:?}");
        // The mixed kernel's rule: F(4x4) from 128 input channels on maps of 28 x 28 or more.
        let out = spec.output_shape(input).unwrap();
        let mixed_tile = if spec.in_c >= 128 && out.h >= 28 && out.w >= 28 {
            4
        } else {
            2
        };
        let tile = match layer.kernel() {
            ConvKernel::Winograd(_) => Some(2),
            ConvKernel::Winograd4(_) => Some(4),
            ConvKernel::WinogradMixed(_) => Some(mixed_tile),
            _ => None,
        };
        assert_eq!(layer.winograd_tile(input), tile, "{what}: {kernel:?}");
        let what = format!("{what} ({}, tile {tile:?})", layer.kernel().name());
        let transforms = match tile {
            Some(2) => Some(&F2),
            Some(4) => Some(&F4),
            _ => None,
        };
        if let Some(t) = transforms {
            let bound = Reduced {
                values: want.values.clone(),
                magnitude: winograd_magnitude(&x, input, &w, t),
            };
            assert_reduction_close(&got, &bound, t.roundings(spec.in_c), &what);
        } else {
            assert_reduction_close(&got, &want, spec.k_total() + 1, &what);
        }
    }
}

fn conv(in_c: usize, out_c: usize, window: Window2d, relu: bool) -> Conv2dSpec {
    Conv2dSpec {
        in_c,
        out_c,
        window,
        relu,
    }
}

#[test]
fn kernels_strides_and_padding() {
    let cases = [
        (
            Shape4::new(2, 7, 9, 17),
            conv(17, 64, Window2d::square(1, 1, 0), false),
            "1x1",
        ),
        (
            Shape4::new(1, 13, 11, 3),
            conv(3, 64, Window2d::square(3, 1, 1), true),
            "3x3 rgb",
        ),
        (
            Shape4::new(3, 9, 10, 64),
            conv(64, 17, Window2d::square(3, 1, 1), true),
            "batch 3",
        ),
        (
            Shape4::new(2, 15, 12, 17),
            conv(17, 33, Window2d::square(5, 2, 2), false),
            "5x5 s2",
        ),
        (
            Shape4::new(2, 67, 63, 3),
            conv(3, 64, Window2d::square(11, 4, 2), true),
            "11x11 s4",
        ),
        (
            Shape4::new(2, 5, 7, 513),
            conv(513, 17, Window2d::square(3, 1, 1), false),
            "513 in",
        ),
        (
            Shape4::new(1, 6, 5, 5),
            conv(5, 513, Window2d::square(3, 1, 1), true),
            "513 out",
        ),
        (
            Shape4::new(1, 4, 3, 7),
            conv(7, 9, Window2d::square(3, 1, 3), false),
            "pad 3",
        ),
        (
            Shape4::new(1, 1, 1, 1),
            conv(1, 1, Window2d::square(1, 1, 0), false),
            "1x1x1",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        check(input, spec, seed as u64 * 10, what);
    }
}

#[test]
fn several_im2col_bands() {
    // 64 channels x 9 taps = 576 values a row: a 1 Mi-value band holds 1820 rows, so 2 x 40 x
    // 41 = 3280 output pixels take two bands, the second partial, and bands cross images.
    check(
        Shape4::new(2, 40, 41, 64),
        conv(64, 32, Window2d::square(3, 1, 1), true),
        100,
        "two bands",
    );
    // Narrow (8 columns), so the AVX-512 kernel unfolds it too: 1920 pixels in blocks of
    // 448, the last partial.
    check(
        Shape4::new(4, 60, 8, 64),
        conv(64, 40, Window2d::square(3, 1, 1), true),
        101,
        "narrow, many unfolded blocks",
    );
}

#[test]
fn row_tiles_blocks_and_panels() {
    // Output widths of 12 to 55 run as tiles of 14 pixels along rows; the last tile of a row
    // is partial and reads zero columns past the edge.
    let cases = [
        (
            Shape4::new(2, 9, 23, 17),
            conv(17, 33, Window2d::square(3, 2, 1), true),
            "stride 2, 12 wide, 33 out",
        ),
        (
            Shape4::new(1, 4, 20, 7),
            conv(7, 9, Window2d::square(3, 1, 3), false),
            "pad 3, 24 wide",
        ),
        (
            Shape4::new(1, 15, 227, 3),
            conv(3, 64, Window2d::square(11, 4, 2), true),
            "11x11 s4, 55 wide",
        ),
        (
            Shape4::new(1, 3, 14, 5),
            conv(5, 513, Window2d::square(3, 1, 1), true),
            "513 out in split panels",
        ),
        (
            Shape4::new(1, 3, 14, 513),
            conv(513, 8, Window2d::square(3, 1, 1), false),
            "513 in",
        ),
        (
            Shape4::new(3, 37, 33, 16),
            conv(16, 64, Window2d::square(3, 1, 1), true),
            "33 wide, row blocks across images",
        ),
        (
            Shape4::new(1, 16, 28, 32),
            conv(32, 48, Window2d::square(1, 1, 0), false),
            "1x1, 28 wide",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        check(input, spec, 200 + seed as u64 * 10, what);
    }
}

#[test]
fn one_by_one_panel_groups() {
    // A 1x1 layer's tiles go through groups of weight panels that fit in 256 KiB: 700 inputs
    // make groups of 2 of the 5 panels (the last partial, 150 outputs), 2100 groups of 1;
    // 198 pixels end in a partial tile.
    let cases = [
        (
            Shape4::new(2, 9, 11, 700),
            conv(700, 150, Window2d::square(1, 1, 0), true),
            "1x1, groups of 2 panels",
        ),
        (
            Shape4::new(1, 3, 5, 2100),
            conv(2100, 70, Window2d::square(1, 1, 0), false),
            "1x1, groups of 1 panel",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        check(input, spec, 260 + seed as u64 * 10, what);
    }
}

#[test]
fn winograd_tiles_bands_and_edges() {
    // 3x3 stride-1 layers: odd output sizes (a half tile at the bottom and right), padding 0,
    // 1 and 2, 16 to 512 input channels, output channels that end mid-panel, outputs narrower
    // than a microkernel's 14 tiles (bands of several tile rows), several bands per image,
    // and a single image whose panels split across tasks.
    let cases = [
        (
            Shape4::new(2, 9, 11, 16),
            conv(16, 17, Window2d::square(3, 1, 1), true),
            "9x11, 17 out",
        ),
        (
            Shape4::new(1, 8, 8, 32),
            conv(32, 40, Window2d::square(3, 1, 0), false),
            "pad 0",
        ),
        (
            Shape4::new(1, 5, 7, 16),
            conv(16, 8, Window2d::square(3, 1, 2), true),
            "pad 2",
        ),
        (
            Shape4::new(1, 7, 7, 512),
            conv(512, 70, Window2d::square(3, 1, 1), true),
            "7x7, 512 in",
        ),
        (
            Shape4::new(3, 30, 6, 48),
            conv(48, 33, Window2d::square(3, 1, 1), false),
            "narrow",
        ),
        (
            Shape4::new(1, 56, 57, 64),
            conv(64, 64, Window2d::square(3, 1, 1), true),
            "bands",
        ),
        (
            Shape4::new(1, 14, 14, 128),
            conv(128, 256, Window2d::square(3, 1, 1), true),
            "split panels",
        ),
        (
            Shape4::new(1, 1, 1, 16),
            conv(16, 5, Window2d::square(3, 1, 1), true),
            "1x1 image",
        ),
        (
            // Bands span images (small maps): they start and end inside images.
            Shape4::new(5, 10, 9, 32),
            conv(32, 35, Window2d::square(3, 1, 1), true),
            "bands across images",
        ),
        (
            Shape4::new(7, 3, 5, 16),
            conv(16, 16, Window2d::square(3, 1, 1), false),
            "many small images",
        ),
        (
            // The mixed kernel's F(4x4) side of its rule (128 channels, 28 x 29), and its
            // F(2x2) side one row short (27 x 29).
            Shape4::new(1, 28, 29, 128),
            conv(128, 40, Window2d::square(3, 1, 1), true),
            "mixed: F(4x4)",
        ),
        (
            Shape4::new(2, 27, 29, 128),
            conv(128, 40, Window2d::square(3, 1, 1), true),
            "mixed: F(2x2), 27 rows",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        check(input, spec, 300 + seed as u64 * 10, what);
    }
}

/// `v` rounded to bf16, to nearest even.
fn bf16_rounded(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| half::bf16::from_f32(x).to_f32())
        .collect()
}

/// Whether this CPU runs bf16 products; with `CROSSPOOL_REQUIRE_AMX=1` (as CI sets where
/// the CPU lists AMX-BF16) a program that cannot use them fails instead.
fn amx() -> bool {
    if std::env::var("CROSSPOOL_REQUIRE_AMX").is_ok_and(|v| v == "1") {
        assert!(
            Products::Bf16.is_available(),
            "CROSSPOOL_REQUIRE_AMX=1 but AMX-BF16 is not available to this process"
        );
    }
    Products::Bf16.is_available()
}

/// A layer with bf16 products: where AMX suits it, the f32 sum of the products of the
/// bf16-rounded inputs and weights (exact in f32: 8 x 8 significant bits), so it is held to
/// the f32 bound against the reference run on those rounded values; elsewhere the f32 kernel
/// and its bound. Where AMX is missing, refused.
fn check_bf16(input: Shape4, spec: Conv2dSpec, seed: u64, what: &str) {
    let (w, x) = seeded_layer(input, spec, seed);
    let layer = CpuConv2d::with_kernel(&w, ConvKernel::AmxBf16);
    if !amx() {
        let e = layer.err().expect("bf16 refused without AMX").to_string();
        assert!(e.contains("AMX-BF16"), "{e}");
        return;
    }
    let layer = layer.unwrap();
    let suits =
        (spec.window.stride_h, spec.window.stride_w) == (1, 1) && spec.in_c.is_multiple_of(32);
    assert_eq!(layer.kernel() == ConvKernel::AmxBf16, suits, "{what}");
    let mut got = vec![f32::NAN; spec.output_shape(input).unwrap().len()];
    layer.run(&x, input, &mut got).unwrap();
    if !suits {
        // The f32 kernel runs, as it does without bf16 (and is tested above).
        let f32_layer = CpuConv2d::with_kernel(&w, ConvKernel::detected()).unwrap();
        let mut want = vec![f32::NAN; got.len()];
        f32_layer.run(&x, input, &mut want).unwrap();
        assert_eq!(layer.kernel(), f32_layer.kernel(), "{what}");
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{what}"
        );
        return;
    }
    let rounded = Conv2dWeights::new(spec, bf16_rounded(&w.weight), w.bias.clone()).unwrap();
    let (_, want) = reference::conv2d(&bf16_rounded(&x), input, &rounded).unwrap();
    let what = format!("{what} ({})", layer.kernel().name());
    assert_reduction_close(&got, &want, spec.k_total() + 1, &what);
}

#[test]
fn amx_bf16_steps_bands_and_edges() {
    // Stride-1 layers with 32 to 512 input channels: one and several 32-channel chunks,
    // output channels that end mid-tile and mid-panel, panels split across tasks, outputs
    // narrower than a step's 32 pixels (a step across several rows, their dropped columns
    // included), padding 0 to 3, 1x1 and 5x5 kernels, batches whose bands cross images,
    // several bands per image; and layers AMX does not suit (stride 2, 48 or 3 channels),
    // which run in f32.
    let cases = [
        (
            Shape4::new(2, 9, 11, 32),
            conv(32, 17, Window2d::square(3, 1, 1), true),
            "9x11, 17 out",
        ),
        (
            Shape4::new(1, 8, 8, 64),
            conv(64, 40, Window2d::square(3, 1, 0), false),
            "pad 0, 40 out",
        ),
        (
            Shape4::new(1, 4, 3, 32),
            conv(32, 9, Window2d::square(3, 1, 3), false),
            "pad 3",
        ),
        (
            Shape4::new(1, 1, 1, 64),
            conv(64, 5, Window2d::square(3, 1, 1), true),
            "1x1 image",
        ),
        (
            Shape4::new(3, 7, 7, 96),
            conv(96, 513, Window2d::square(3, 1, 1), true),
            "513 out, batch 3",
        ),
        (
            Shape4::new(1, 16, 28, 64),
            conv(64, 48, Window2d::square(1, 1, 0), false),
            "1x1 kernel",
        ),
        (
            Shape4::new(2, 13, 13, 64),
            conv(64, 70, Window2d::square(5, 1, 2), true),
            "5x5",
        ),
        (
            Shape4::new(1, 30, 27, 512),
            conv(512, 40, Window2d::square(3, 1, 1), true),
            "bands, 512 in",
        ),
        (
            Shape4::new(1, 14, 14, 128),
            conv(128, 256, Window2d::square(3, 1, 1), true),
            "split panels",
        ),
        (
            Shape4::new(2, 9, 23, 32),
            conv(32, 33, Window2d::square(3, 2, 1), true),
            "stride 2 (f32)",
        ),
        (
            Shape4::new(1, 9, 10, 48),
            conv(48, 16, Window2d::square(3, 1, 1), true),
            "48 in (f32)",
        ),
        (
            Shape4::new(1, 13, 11, 3),
            conv(3, 64, Window2d::square(3, 1, 1), true),
            "rgb (f32)",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        check_bf16(input, spec, 500 + seed as u64 * 10, what);
    }
}

#[test]
fn amx_bf16_strided_one_by_one() {
    // 1x1 layers with stride 2 or 3 and no padding (ResNet's downsampling shortcuts) run on
    // AMX over the pixels they read, gathered: held to the f32 bound against the reference on
    // the bf16-rounded values, on odd map sides, a stride that leaves columns unread, several
    // chunks and panels.
    let cases = [
        (
            Shape4::new(2, 9, 11, 64),
            conv(64, 48, Window2d::square(1, 2, 0), false),
            "stride 2, 9x11",
        ),
        (
            Shape4::new(1, 14, 14, 256),
            conv(256, 512, Window2d::square(1, 2, 0), false),
            "stride 2, 256 -> 512",
        ),
        (
            Shape4::new(3, 7, 8, 32),
            conv(32, 40, Window2d::square(1, 3, 0), true),
            "stride 3, 7x8",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        let (w, x) = seeded_layer(input, spec, 700 + seed as u64 * 10);
        let layer = CpuConv2d::with_kernel(&w, ConvKernel::AmxBf16);
        if !amx() {
            assert!(layer.is_err(), "{what}");
            continue;
        }
        let layer = layer.unwrap();
        assert_eq!(layer.kernel(), ConvKernel::AmxBf16, "{what}");
        let mut got = vec![f32::NAN; spec.output_shape(input).unwrap().len()];
        layer.run(&x, input, &mut got).unwrap();
        let rounded = Conv2dWeights::new(spec, bf16_rounded(&w.weight), w.bias.clone()).unwrap();
        let (_, want) = reference::conv2d(&bf16_rounded(&x), input, &rounded).unwrap();
        assert_reduction_close(&got, &want, spec.k_total() + 1, what);
    }
}

#[test]
fn amx_bf16_rounds_to_nearest_even() {
    // 1 + 2^-8 lies halfway between the bf16 neighbours 1 and 1 + 2^-7: nearest even is 1,
    // so a 1x1 layer of weight 1 gives 1 (truncation would too; 1 + 3 * 2^-9 rounds up to
    // 1 + 2^-7, which truncation gives as 1).
    if !amx() {
        return;
    }
    let spec = conv(32, 1, Window2d::square(1, 1, 0), false);
    let mut weights = vec![0.0; 32];
    weights[0] = 1.0;
    let w = Conv2dWeights::new(spec, weights, vec![0.0]).unwrap();
    let layer = CpuConv2d::with_kernel(&w, ConvKernel::AmxBf16).unwrap();
    let shape = Shape4::new(1, 1, 2, 32);
    let mut x = vec![0.0f32; 64];
    x[0] = 1.0 + 2f32.powi(-8);
    x[32] = 1.0 + 3.0 * 2f32.powi(-9);
    let mut y = vec![0.0; 2];
    layer.run(&x, shape, &mut y).unwrap();
    assert_eq!(y, [1.0, 1.0 + 2f32.powi(-7)]);
}

#[test]
fn amx_bf16_is_not_an_environment_kernel() {
    let e = ConvKernel::parse("amx-bf16").unwrap_err().to_string();
    assert!(e.contains("--precision bf16"), "{e}");
    assert!(!ConvKernel::available().contains(&ConvKernel::AmxBf16));
}

#[test]
fn winograd_rounding_counts_are_derived() {
    // F(2x2): ±1 transforms, one rounding a term in Bᵀ's rows, two in Aᵀ's (the bound the
    // kernel was first held to); F(4x4): Bᵀ's 5 costs a product, Aᵀ's rows sum 5 terms.
    assert_eq!(F2.roundings(16), 16 + 8);
    assert_eq!(F4.roundings(16), 16 + 16);
}

#[test]
fn unavailable_kernels_are_errors() {
    let spec = conv(3, 4, Window2d::square(3, 1, 1), false);
    let w = Conv2dWeights::new(spec, random(spec.weight_len(), 1), random(4, 2)).unwrap();
    for simd in [Simd::Avx512, Simd::Avx2] {
        for k in [
            ConvKernel::Direct(simd),
            ConvKernel::WinogradMixed(simd),
            ConvKernel::Winograd(simd),
            ConvKernel::Winograd4(simd),
        ] {
            assert_eq!(CpuConv2d::with_kernel(&w, k).is_ok(), simd.is_available());
        }
    }
    assert!(CpuConv2d::with_kernel(&w, ConvKernel::Gemm).is_ok());
}

#[test]
fn wrong_buffer_sizes_are_errors() {
    let spec = conv(3, 4, Window2d::square(3, 1, 1), false);
    let w = Conv2dWeights::new(spec, random(spec.weight_len(), 1), random(4, 2)).unwrap();
    let layer = CpuConv2d::new(&w).unwrap();
    let shape = Shape4::new(1, 5, 5, 3);
    let x = random(shape.len(), 3);
    let mut short = vec![0.0; 5 * 5 * 4 - 1];
    assert!(layer.run(&x, shape, &mut short).is_err());
    let mut y = vec![0.0; 5 * 5 * 4];
    assert!(layer.run(&x[1..], shape, &mut y).is_err());
    assert!(layer.run(&x, Shape4::new(1, 5, 5, 2), &mut y).is_err());
}

/// A residual block's shortcut `s` in every CPU kernel's epilogue (and AMX's, where this CPU
/// has it): with it (and ReLU), each output must be exactly `max((acc + bias) + s, 0)`, where
/// `acc + bias` is what the same kernel stores for the same weights without either, so a
/// shortcut read at the wrong pixel or channel fails exactly; and the reference with the
/// shortcut holds the direct kernels to the sum bound.
#[test]
fn residual_addition_in_every_kernel() {
    let cases = [
        (
            Shape4::new(2, 7, 9, 17),
            conv(17, 64, Window2d::square(1, 1, 0), true),
            "1x1",
        ),
        (
            Shape4::new(2, 9, 8, 64),
            conv(64, 256, Window2d::square(1, 2, 0), false),
            "1x1 s2",
        ),
        (
            Shape4::new(1, 11, 6, 33),
            conv(33, 40, Window2d::square(3, 2, 1), true),
            "3x3 s2",
        ),
        (
            Shape4::new(2, 10, 31, 64),
            conv(64, 40, Window2d::square(3, 1, 1), true),
            "winograd",
        ),
        (
            Shape4::new(1, 7, 7, 64),
            conv(64, 33, Window2d::square(3, 1, 1), true),
            "7x7 map",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        let (plain, x) = seeded_layer(
            input,
            Conv2dSpec {
                relu: false,
                ..spec
            },
            500 + seed as u64,
        );
        let with_relu = Conv2dWeights {
            spec: Conv2dSpec { relu: true, ..spec },
            ..plain.clone()
        };
        let out = spec.output_shape(input).unwrap();
        let s = random(out.len(), 600 + seed as u64);
        let mut kernels: Vec<(ConvKernel, Products)> =
            kernels().into_iter().map(|k| (k, Products::F32)).collect();
        if amx() {
            kernels.push((ConvKernel::detected(), Products::Bf16));
        }
        for (kernel, products) in kernels {
            let a = CpuConv2d::with_products(&plain, kernel, products).unwrap();
            let b = CpuConv2d::with_products(&with_relu, kernel, products).unwrap();
            let mut sums = vec![f32::NAN; out.len()];
            a.run(&x, input, &mut sums).unwrap();
            let mut got = vec![f32::NAN; out.len()];
            b.run_add(&x, input, Some(&s), &mut got).unwrap();
            let what = format!("{what} ({}, {products:?})", b.kernel().name());
            for (i, ((g, a), s)) in got.iter().zip(&sums).zip(&s).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    (a + s).max(0.0).to_bits(),
                    "{what}: output {i}"
                );
            }
            if matches!(b.kernel(), ConvKernel::Direct(_) | ConvKernel::Gemm) {
                let (_, want) =
                    reference::conv2d_add(&x, input, &with_relu, Some((out, &s))).unwrap();
                assert_reduction_close(&got, &want, spec.k_total() + 2, &what);
            }
        }
        // A shortcut of another length is refused.
        let layer = CpuConv2d::with_kernel(&with_relu, ConvKernel::detected()).unwrap();
        let mut got = vec![0.0; out.len()];
        assert!(layer.run_add(&x, input, Some(&s[1..]), &mut got).is_err());
    }
}

/// 1x1 stride-1 layers run as a plain matrix product on the input in place (ResNet's
/// bottleneck ends): tiles of 14 pixels cross rows and images, and a last partial tile (here
/// 105 = 7 x 14 + 7 pixels, and 3280 = 234 x 14 + 4 in 8 blocks of tiles) is read from a
/// zero-padded copy; with padding or a stride the layer runs on row tiles as before.
#[test]
fn pointwise_tiles_cross_rows_and_images() {
    let one = Window2d::square(1, 1, 0);
    check(
        Shape4::new(3, 5, 7, 33),
        conv(33, 40, one, true),
        700,
        "1x1, partial last tile",
    );
    check(
        Shape4::new(2, 40, 41, 64),
        conv(64, 70, one, false),
        710,
        "1x1, many blocks",
    );
    check(
        Shape4::new(1, 2, 3, 16),
        conv(16, 8, one, true),
        720,
        "1x1, fewer pixels than a tile",
    );
    check(
        Shape4::new(2, 5, 7, 33),
        conv(33, 40, Window2d::square(1, 1, 1), true),
        730,
        "1x1 padded",
    );
}

/// One mixed-Winograd layer run on maps on both sides of its rule, in turn: each run equals,
/// bit for bit, the fixed F(4x4) or F(2x2) layer its rule names (the weights of each variant
/// are transformed on first use and kept).
#[test]
fn mixed_winograd_switches_by_map_size() {
    let Some(simd) = Simd::detected() else {
        return; // no Winograd kernels on this CPU: nothing to switch
    };
    let spec = conv(128, 48, Window2d::square(3, 1, 1), true);
    let (w, _) = seeded_layer(Shape4::new(1, 28, 28, 128), spec, 900);
    let mixed = CpuConv2d::with_kernel(&w, ConvKernel::WinogradMixed(simd)).unwrap();
    let f2 = CpuConv2d::with_kernel(&w, ConvKernel::Winograd(simd)).unwrap();
    let f4 = CpuConv2d::with_kernel(&w, ConvKernel::Winograd4(simd)).unwrap();
    for (i, (side, fixed, m)) in [(28, &f4, 4), (14, &f2, 2), (30, &f4, 4), (27, &f2, 2)]
        .into_iter()
        .enumerate()
    {
        let shape = Shape4::new(2, side, side, 128);
        let x = random(shape.len(), 910 + i as u64);
        let run = |layer: &CpuConv2d| {
            let mut y = vec![f32::NAN; spec.output_shape(shape).unwrap().len()];
            layer.run(&x, shape, &mut y).unwrap();
            y
        };
        assert_eq!(mixed.winograd_tile(shape), Some(m), "{side}x{side}");
        let (got, want) = (run(&mixed), run(fixed));
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{side}x{side}: mixed differs from F({m}x{m})"
        );
    }
}
