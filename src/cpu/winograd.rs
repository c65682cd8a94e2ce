//! Winograd F(m x m, 3x3) convolution (Lavin & Gray 2016) for 3x3 stride-1 layers, with
//! output tiles of m = 2 or 4 ([`WinogradTile`]), on the same register tiles as the direct
//! convolution (`microkernel`: AVX-512 or AVX2).
//!
//! Each m x m block of output pixels (a tile) comes from an α x α patch `d` of the input
//! (α = m + 2): `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, α² products per channel pair where direct
//! convolution takes 9m²: 2.25 times fewer multiply-adds for F(2x2), 4 times for F(4x4).
//! The α² element-wise products summed over the input channels are α² matrix products,
//! `M_ξ = V_ξ U_ξ` (tiles x in_c times in_c x out_c), which the microkernel runs with tiles as
//! its pixels. Per task (a band of tile rows, which may run from one image into the next, so
//! that small maps still give each weight panel enough tiles): the input patches are transformed,
//! 16 channels a vector, into `V`; then for each panel of 32 output channels the α² products
//! land in `M`, and the output transform, bias and ReLU write the output. The weights are
//! transformed once, in f64, when the layer is made.
//!
//! Rounding: each row of a transform sums a few terms (F(2x2): coefficients 0 and ±1, G's 0,
//! ±1/2, 1; F(4x4): interpolation points 0, ±1, ±2, so Bᵀ's coefficients are up to 5 and Aᵀ's
//! up to 8), so the error bound is that of a dot product of `in_c` terms plus the transforms'
//! roundings, relative to the magnitudes through the absolute-valued transforms, which grow
//! with the larger coefficients (tests/cpu_conv.rs derives both).

use super::direct_conv::{for_each_block, pad_row, BLOCK};
use super::microkernel::{self, Lanes, OutPtr, Simd, Tile, TileGeometry, MR, NR};
use crate::shape::{Conv2dSpec, Shape4};
use std::cell::RefCell;
use std::sync::OnceLock;

/// Bytes of a band's transformed input `V` (all α² matrices of tiles x in_c) a task aims for:
/// a quarter of a core's L2, so that V, the products and the weight panels stay there while
/// the task multiplies them. (Measured on a 2 MiB-L2 Xeon: 256 KiB of each V_ξ, 4 MiB of V,
/// spilled and ran conv1_2 30% slower.)
const V_BYTES: usize = 512 << 10;
/// Fewest tiles in a band, so that each transformed weight panel, read from memory for the
/// band (16 MiB of U_ξ for a 512-channel F(2x2) layer, 36 MiB for F(4x4)), serves at least 8
/// microkernel rows. Bands span images to get them: conv5 at 224 has 49 F(2x2) tiles an image.
const MIN_TILES: usize = 8 * MR;
/// Bytes of products `M` a task keeps for a group of panels before the output transform.
const M_BYTES: usize = 1 << 20;

/// A Winograd variant: F(m x m, 3x3) computes output tiles of m x m pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradTile {
    /// F(2x2, 3x3): 4 x 4 patches, 16 products (2.25x fewer than direct).
    F2 = 0,
    /// F(4x4, 3x3) on the points 0, ±1, ±2: 6 x 6 patches, 36 products (4x fewer).
    F4 = 1,
}

impl WinogradTile {
    /// Output pixels per tile side (m).
    pub fn m(self) -> usize {
        match self {
            WinogradTile::F2 => 2,
            WinogradTile::F4 => 4,
        }
    }

    /// Input pixels per patch side (α = m + 2).
    pub fn alpha(self) -> usize {
        self.m() + 2
    }

    /// `G`, the weight transform (α x 3). `Bᵀ` and `Aᵀ` are the straight-line 1-D transforms
    /// below ([`f2_input`], [`f4_output`], ...).
    pub fn g(self) -> &'static [[f64; 3]] {
        match self {
            WinogradTile::F2 => &[
                [1.0, 0.0, 0.0],
                [0.5, 0.5, 0.5],
                [0.5, -0.5, 0.5],
                [0.0, 0.0, 1.0],
            ],
            WinogradTile::F4 => &[
                [1.0 / 4.0, 0.0, 0.0],
                [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                [0.0, 0.0, 1.0],
            ],
        }
    }
}

thread_local! {
    /// Each thread's transformed input `V` and products `M`, kept between calls.
    static SCRATCH: RefCell<(Vec<Lanes>, Vec<Lanes>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The first `len` of `scratch`, grown (with zeros) if it is shorter.
fn grown(scratch: &mut Vec<Lanes>, len: usize) -> &mut [Lanes] {
    if scratch.len() < len {
        scratch.resize(len, Lanes([0.0; 16]));
    }
    &mut scratch[..len]
}

/// Zero bias for the microkernel: the products are raw; bias follows the output transform.
static ZERO_BIAS: [Lanes; 2] = [Lanes([0.0; 16]), Lanes([0.0; 16])];

/// Which variant a layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileChoice {
    /// This one on every map.
    Fixed(WinogradTile),
    /// By the layer and its map ([`WinogradConv::tile_for`]): F(4x4) where it is faster and
    /// adds the least error, F(2x2) elsewhere.
    BySize,
}

/// Fewest input channels for F(4x4) under [`TileChoice::BySize`]: VGG16's conv1_2 (64
/// channels, after the RGB layer) is F(4x4)'s worst layer with seeded weights (1.3e-6
/// normwise against float64) and gains nothing from it at 224.
const F4_MIN_CHANNELS: usize = 128;
/// Smallest output side for F(4x4) under [`TileChoice::BySize`]: on smaller maps F(2x2) is
/// faster (VGG16's 14x14 conv5 at batch 1: 3.5 against 5.9 ms), since F(4x4)'s 36 weight
/// matrices (36 MiB for 512 channels) serve fewer, more padded tiles.
const F4_MIN_SIDE: usize = 28;

/// A 3x3 stride-1 convolution layer with its weights transformed for [`WinogradConv::run`].
pub struct WinogradConv {
    spec: Conv2dSpec,
    simd: Simd,
    choice: TileChoice,
    panels: usize,
    /// The weights `[o][i][ky][kx]` while a variant may still be made ([`TileChoice::BySize`];
    /// empty for a fixed one).
    weight: Vec<f32>,
    /// `U = G g Gᵀ` for F(2x2) and F(4x4), each made when first run (a fixed choice's when the
    /// layer is made): `[ξ][panel][in_c][NR]` (ξ < α²), zero past `out_c`.
    u: [OnceLock<Vec<Lanes>>; 2],
    /// `[panel][NR]`, zero past `out_c`.
    bias: Vec<Lanes>,
}

impl WinogradConv {
    /// Whether the layer is one this kernel runs: 3x3, stride 1, input channels a multiple
    /// of 16 (the transforms take 16 channels a vector; an RGB layer runs direct).
    pub fn suits(spec: &Conv2dSpec) -> bool {
        let w = spec.window;
        (w.kh, w.kw, w.stride_h, w.stride_w) == (3, 3, 1, 1)
            && spec.in_c.is_multiple_of(16)
            && spec.in_c > 0
    }

    /// Packs `weight(o, i, ky, kx)` and the bias for the variant(s) of `choice`, for tiles on
    /// `simd`; `spec` must suit.
    pub fn new(
        spec: Conv2dSpec,
        (simd, choice): (Simd, TileChoice),
        weight: impl Fn(usize, usize, usize, usize) -> f32,
        bias: &[f32],
    ) -> Self {
        debug_assert!(Self::suits(&spec));
        let (c, n) = (spec.in_c, spec.out_c);
        let panels = n.div_ceil(NR);
        let mut packed_bias = vec![Lanes([0.0; 16]); panels * 2];
        for (o, &b) in bias.iter().enumerate().take(n) {
            packed_bias[o / NR * 2 + o % NR / 16].0[o % 16] = b;
        }
        let u = [OnceLock::new(), OnceLock::new()];
        let mut kept = Vec::new();
        match choice {
            TileChoice::Fixed(tile) => {
                let _ = u[tile as usize].set(transform_weights(spec, tile, weight));
            }
            TileChoice::BySize => {
                kept.reserve_exact(n * c * 9);
                for o in 0..n {
                    for i in 0..c {
                        for k in 0..9 {
                            kept.push(weight(o, i, k / 3, k % 3));
                        }
                    }
                }
            }
        }
        WinogradConv {
            spec,
            simd,
            choice,
            panels,
            weight: kept,
            u,
            bias: packed_bias,
        }
    }

    /// The variant it runs for output maps of shape `out`.
    pub fn tile_for(&self, out: Shape4) -> WinogradTile {
        match self.choice {
            TileChoice::Fixed(tile) => tile,
            TileChoice::BySize
                if self.spec.in_c >= F4_MIN_CHANNELS
                    && out.h >= F4_MIN_SIDE
                    && out.w >= F4_MIN_SIDE =>
            {
                WinogradTile::F4
            }
            TileChoice::BySize => WinogradTile::F2,
        }
    }

    /// `U` for `tile`, made now if this is its first run.
    fn u(&self, tile: WinogradTile) -> &[Lanes] {
        self.u[tile as usize].get_or_init(|| {
            let c = self.spec.in_c;
            transform_weights(self.spec, tile, |o, i, ky, kx| {
                self.weight[((o * c + i) * 3 + ky) * 3 + kx]
            })
        })
    }

    /// The instruction set its tiles run on.
    pub fn simd(&self) -> Simd {
        self.simd
    }

    /// How it chooses its variant.
    pub fn choice(&self) -> TileChoice {
        self.choice
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
        assert!(self.simd.is_available(), "{:?} is not available", self.simd);
        let tile = self.tile_for(out);
        let u = self.u(tile);
        let (c, side, alpha) = (shape.c, tile.m(), tile.alpha());
        let a2 = alpha * alpha;
        let (tile_rows, tile_cols) = (out.h.div_ceil(side), out.w.div_ceil(side));
        // Bands of tile rows, counted across the batch's images (a band may end one image and
        // start the next): as many as keep V in cache, but at least MIN_TILES tiles.
        let all_rows = out.n * tile_rows;
        let rows = (V_BYTES / (a2 * c * 4) / tile_cols)
            .max(MIN_TILES.div_ceil(tile_cols))
            .clamp(1, all_rows);
        let dst = OutPtr::new(output, shortcut);
        let bands = (all_rows, all_rows.div_ceil(rows));
        for_each_block(1, bands, self.panels, |_, band, panels| {
            BLOCK.with(|block| {
                SCRATCH.with(|scratch| {
                    let mut block = block.borrow_mut();
                    let (v, m) = &mut *scratch.borrow_mut();
                    let tiles = band.len() * tile_cols;
                    let tiles_pad = tiles.div_ceil(MR) * MR;
                    // Scratch is reused as it is: the transforms write every value read back,
                    // but for the padding tiles that complete the last microkernel rows, which
                    // are zeroed (their sums are never stored).
                    let v = grown(v, a2 * tiles_pad * c / 16);
                    for xi in 0..a2 {
                        v[(xi * tiles_pad + tiles) * c / 16..(xi + 1) * tiles_pad * c / 16]
                            .fill(Lanes([0.0; 16]));
                    }
                    // The band's parts in each image: (image, its tile rows, first tile).
                    let parts: Vec<(usize, std::ops::Range<usize>, usize)> =
                        (band.start / tile_rows..band.end.div_ceil(tile_rows))
                            .map(|img| {
                                let lo = band.start.max(img * tile_rows);
                                let hi = band.end.min((img + 1) * tile_rows);
                                let first = (lo - band.start) * tile_cols;
                                (img, lo - img * tile_rows..hi - img * tile_rows, first)
                            })
                            .collect();
                    for (img, tr, first) in &parts {
                        let row_len = self.pad_band(
                            input,
                            shape,
                            (*img, tr.clone()),
                            (side, tile_cols),
                            &mut block,
                        );
                        // SAFETY: the instruction set is checked above; `block` holds the
                        // part's padded patches and `v` α² x tiles_pad x c floats.
                        unsafe {
                            transform_input(
                                (self.simd, tile),
                                &block,
                                row_len,
                                tr.len(),
                                tile_cols,
                                (c, *first),
                                tiles_pad,
                                v,
                            )
                        };
                    }
                    // Panels in groups whose products fit M_BYTES: for each ξ, V_ξ serves the
                    // whole group while it is in cache, and each U_ξ panel is read once.
                    let per_panel = tiles_pad * a2 * NR * 4;
                    let group = (M_BYTES / per_panel).max(1);
                    let panels: Vec<usize> = panels.collect();
                    for group in panels.chunks(group) {
                        let m = grown(m, group.len() * tiles_pad * a2 * 2);
                        // SAFETY: as above; this task alone writes these tile rows in these
                        // panels.
                        unsafe {
                            self.products((tile, u), v, m, (tiles, tiles_pad), group);
                            for (g, &p) in group.iter().enumerate() {
                                let mg = &m[g * tiles_pad * a2 * 2..][..tiles_pad * a2 * 2];
                                for (img, tr, first) in &parts {
                                    self.transform_output(
                                        (tile, &mg[first * a2 * 2..]),
                                        out,
                                        (*img, tr.clone()),
                                        tile_cols,
                                        p,
                                        dst,
                                    );
                                }
                            }
                        }
                    }
                })
            });
        });
    }

    /// Copies the input rows and columns the tile rows `tr` read into `block`, zero-padded:
    /// `m * rows + 2` rows of `m * tile_cols + 2` pixels. Returns the row length in floats.
    fn pad_band(
        &self,
        input: &[f32],
        shape: Shape4,
        (img, tr): (usize, std::ops::Range<usize>),
        (m, tile_cols): (usize, usize),
        block: &mut Vec<f32>,
    ) -> usize {
        let (c, win) = (shape.c, self.spec.window);
        let cols = m * tile_cols + 2;
        let rows = m * tr.len() + 2;
        let row_len = cols * c;
        if block.len() < rows * row_len {
            block.resize(rows * row_len, 0.0);
        }
        // Input column of block column 0; copy the input columns that fall inside the block
        // and zero the rest, so that each value is written once.
        let x0 = -(win.pad_w as isize);
        let first = (-x0).max(0) as usize; // block column of input column 0
        let copied = shape.w.min(cols.saturating_sub(first));
        for (r, row) in block[..rows * row_len]
            .chunks_exact_mut(row_len)
            .enumerate()
        {
            let iy = (m * tr.start + r) as isize - win.pad_h as isize;
            if iy < 0 || iy >= shape.h as isize || copied == 0 {
                row.fill(0.0);
                continue;
            }
            let src = &input[shape.index(img, iy as usize, 0, 0)..][..copied * c];
            pad_row(row, first * c, src);
        }
        row_len
    }

    /// `M[g][t][ξ][NR] = V_ξ[t][..] · U_ξ[..][panel group[g]]` for the band's tiles.
    ///
    /// # Safety
    /// AVX-512F; `v` is sized as `run` makes it and `m` holds `group.len()` panels' products.
    unsafe fn products(
        &self,
        (tile, u): (WinogradTile, &[Lanes]),
        v: &[Lanes],
        m: &mut [Lanes],
        (tiles, tiles_pad): (usize, usize),
        group: &[usize],
    ) {
        let c = self.spec.in_c;
        let geometry = TileGeometry {
            px_stride: c,
            row_stride: 0,
            kh: 1,
            window_row: c,
        };
        let vf = v.as_ptr() as *const f32;
        let mf = m.as_mut_ptr() as *mut f32;
        let a2 = tile.alpha() * tile.alpha();
        for xi in 0..a2 {
            for (g, &p) in group.iter().enumerate() {
                let u = u[(xi * self.panels + p) * c * 2..].as_ptr() as *const f32;
                let mg = mf.add(g * tiles_pad * a2 * NR);
                for t0 in (0..tiles).step_by(MR) {
                    microkernel::tile(
                        self.simd,
                        Tile {
                            a: vf.add((xi * tiles_pad + t0) * c),
                            geometry,
                            b: u,
                            bias: ZERO_BIAS.as_ptr() as *const f32,
                            relu: false,
                            out: mg.add((t0 * a2 + xi) * NR),
                            shortcut: std::ptr::null(),
                            out_stride: a2 * NR,
                            pixels: MR.min(tiles - t0),
                            cols: NR,
                        },
                    );
                }
            }
        }
    }

    /// `Y = Aᵀ M A` + bias (and ReLU) for the band's tiles, into the output's channels of
    /// panel `p`.
    ///
    /// # Safety
    /// The instruction set is available; `dst` points at an output of shape `out` whose tile
    /// rows `tr0..tr0 + rows` in panel `p` no other thread writes.
    #[allow(clippy::too_many_arguments)]
    unsafe fn transform_output(
        &self,
        (tile, m): (WinogradTile, &[Lanes]),
        out: Shape4,
        (img, tr): (usize, std::ops::Range<usize>),
        tile_cols: usize,
        p: usize,
        dst: OutPtr,
    ) {
        let band = OutputBand {
            m,
            out,
            img,
            tr0: tr.start,
            rows: tr.len(),
            tile_cols,
            channel0: p * NR,
            cols: NR.min(self.spec.out_c - p * NR),
            bias: &self.bias[p * 2..p * 2 + 2],
            relu: self.spec.relu,
            dst,
        };
        match tile {
            WinogradTile::F2 => on_simd(self.simd, OutputPass::<2, 4, _>(band, f2_output)),
            WinogradTile::F4 => on_simd(self.simd, OutputPass::<4, 6, _>(band, f4_output)),
        }
    }
}

/// `U = G g Gᵀ` for `tile` of `weight(o, i, ky, kx)`, in f64 and rounded once, packed
/// `[ξ][panel][in_c][NR]`.
fn transform_weights(
    spec: Conv2dSpec,
    tile: WinogradTile,
    weight: impl Fn(usize, usize, usize, usize) -> f32,
) -> Vec<Lanes> {
    let (c, n, alpha) = (spec.in_c, spec.out_c, tile.alpha());
    let panels = n.div_ceil(NR);
    let g_rows = tile.g();
    let mut u = vec![Lanes([0.0; 16]); alpha * alpha * panels * c * 2];
    for o in 0..n {
        let (p, j) = (o / NR, o % NR);
        for i in 0..c {
            let g = |ky: usize, kx: usize| weight(o, i, ky, kx) as f64;
            for (a, ga) in g_rows.iter().enumerate() {
                for (b, gb) in g_rows.iter().enumerate() {
                    let mut v = 0.0;
                    for (ky, gay) in ga.iter().enumerate() {
                        for (kx, gbx) in gb.iter().enumerate() {
                            v += gay * g(ky, kx) * gbx;
                        }
                    }
                    let xi = a * alpha + b;
                    u[((xi * panels + p) * c + i) * 2 + j / 16].0[j % 16] = v as f32;
                }
            }
        }
    }
    u
}

/// 16 channels of one value, the unit the transforms work in (vectorised by the compiler
/// for the instruction set of the function they are inlined into).
type Chunk = [f32; 16];

#[inline(always)]
fn add(a: Chunk, b: Chunk) -> Chunk {
    let mut r = [0.0; 16];
    for l in 0..16 {
        r[l] = a[l] + b[l];
    }
    r
}

#[inline(always)]
fn sub(a: Chunk, b: Chunk) -> Chunk {
    let mut r = [0.0; 16];
    for l in 0..16 {
        r[l] = a[l] - b[l];
    }
    r
}

/// `c x`, one rounding unless `c` is a power of two (unfused, so the same on every
/// instruction set).
#[inline(always)]
fn mul(c: f32, x: Chunk) -> Chunk {
    x.map(|v| c * v)
}

/// `Bᵀ d` along one line of a 4 x 4 patch (F(2x2)).
#[inline(always)]
fn f2_input(d: &[Chunk; 4]) -> [Chunk; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// `Aᵀ m` along one line of F(2x2)'s 4 x 4 products.
#[inline(always)]
fn f2_output(m: &[Chunk; 4]) -> [Chunk; 2] {
    [add(add(m[0], m[1]), m[2]), sub(sub(m[1], m[2]), m[3])]
}

/// `Bᵀ d` along one line of a 6 x 6 patch (F(4x4), points 0, ±1, ±2):
/// `4d0 - 5d2 + d4`, `(d3 + d4) ∓ 4(d1 + d2)` and `±`, `(d4 - d2) ∓ 2(d1 - d3)`, `4d1 - 5d3 + d5`,
/// sharing the sums. Each term passes through at most 3 roundings.
#[inline(always)]
fn f4_input(d: &[Chunk; 6]) -> [Chunk; 6] {
    let (s12, s34) = (add(d[1], d[2]), add(d[3], d[4]));
    let (d12, d43) = (sub(d[1], d[2]), sub(d[4], d[3]));
    let (d31, d42) = (sub(d[3], d[1]), sub(d[4], d[2]));
    [
        add(sub(mul(4.0, d[0]), mul(5.0, d[2])), d[4]),
        sub(s34, mul(4.0, s12)),
        add(d43, mul(4.0, d12)),
        add(d42, mul(2.0, d31)),
        sub(d42, mul(2.0, d31)),
        add(sub(mul(4.0, d[1]), mul(5.0, d[3])), d[5]),
    ]
}

/// `Aᵀ m` along one line of F(4x4)'s 6 x 6 products: `m0 + (m1 + m2) + (m3 + m4)`,
/// `(m1 - m2) + 2(m3 - m4)`, `(m1 + m2) + 4(m3 + m4)`, `(m1 - m2) + 8(m3 - m4) + m5`. Each term
/// passes through at most 3 roundings.
#[inline(always)]
fn f4_output(m: &[Chunk; 6]) -> [Chunk; 4] {
    let (s12, s34) = (add(m[1], m[2]), add(m[3], m[4]));
    let (d12, d34) = (sub(m[1], m[2]), sub(m[3], m[4]));
    [
        add(add(m[0], s12), s34),
        add(d12, mul(2.0, d34)),
        add(s12, mul(4.0, s34)),
        add(add(d12, mul(8.0, d34)), m[5]),
    ]
}

/// `V_ξ[t][c] = (Bᵀ d B)_ξ` for the `rows x tile_cols` tiles of a padded band, 16 channels a
/// chunk, into `v` (`[α²][tiles_pad][c]`).
///
/// # Safety
/// `simd` is available; `block` holds `m * rows + 2` rows of `row_len` floats with tile
/// patches at (m * row, m * col) pixels; `c` is a multiple of 16 and `v` holds
/// `α² * tiles_pad * c` floats.
#[allow(clippy::too_many_arguments)]
unsafe fn transform_input(
    (simd, tile): (Simd, WinogradTile),
    block: &[f32],
    row_len: usize,
    rows: usize,
    tile_cols: usize,
    (c, first): (usize, usize),
    tiles_pad: usize,
    v: &mut [Lanes],
) {
    let band = InputBand {
        block,
        row_len,
        rows,
        tile_cols,
        c,
        first,
        tiles_pad,
        v: v.as_mut_ptr() as *mut f32,
    };
    debug_assert!(tile.alpha().pow(2) * tiles_pad * c <= v.len() * 16);
    match tile {
        WinogradTile::F2 => on_simd(simd, InputPass::<2, 4, _>(band, f2_input)),
        WinogradTile::F4 => on_simd(simd, InputPass::<4, 6, _>(band, f4_input)),
    }
}

/// A transform pass over a band, compiled for the instruction set [`on_simd`] runs it on:
/// its body is inlined into a function with that set's features enabled, so the compiler
/// vectorises the 16-channel chunks for it.
trait SimdPass {
    /// # Safety
    /// As the pass's transform function.
    unsafe fn body(self);
}

/// Runs `pass` compiled for `simd`.
///
/// # Safety
/// `simd` is available, and `pass`'s own conditions hold.
unsafe fn on_simd(simd: Simd, pass: impl SimdPass) {
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(pass: impl SimdPass) {
        pass.body()
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(pass: impl SimdPass) {
        pass.body()
    }
    match simd {
        Simd::Avx512 => avx512(pass),
        Simd::Avx2 => avx2(pass),
    }
}

/// The input transform of tiles of `M` (patches of `A`) with the variant's 1-D transform.
struct InputPass<'a, const M: usize, const A: usize, L>(InputBand<'a>, L);

/// The output transform of tiles of `M` (patches of `A`) with the variant's 1-D transform.
struct OutputPass<'a, const M: usize, const A: usize, L>(OutputBand<'a>, L);

/// What the input transform reads and writes.
struct InputBand<'a> {
    block: &'a [f32],
    row_len: usize,
    rows: usize,
    tile_cols: usize,
    c: usize,
    /// V's tile of the first patch.
    first: usize,
    tiles_pad: usize,
    v: *mut f32,
}

/// The input transform for tiles of `M` (patches of `A` = M + 2), `line` along columns then
/// rows (a function item: its own type, so it is inlined here).
impl<const M: usize, const A: usize, L: Fn(&[Chunk; A]) -> [Chunk; A]> SimdPass
    for InputPass<'_, M, A, L>
{
    #[inline(always)]
    // Index loops over the A x A patch, in the transform's notation.
    #[allow(clippy::needless_range_loop)]
    unsafe fn body(self) {
        let InputPass(band, line) = self;
        let InputBand {
            block,
            row_len,
            rows,
            tile_cols,
            c,
            first,
            tiles_pad,
            v,
        } = band;
        debug_assert!(block.len() >= (M * rows + 2) * row_len);
        let b = block.as_ptr();
        for r in 0..rows {
            for tc in 0..tile_cols {
                let t = first + r * tile_cols + tc;
                let patch = b.add(M * r * row_len + M * tc * c);
                for c0 in (0..c).step_by(16) {
                    let d = |i: usize, j: usize| -> Chunk {
                        std::ptr::read_unaligned(patch.add(i * row_len + j * c + c0) as *const Chunk)
                    };
                    // Bᵀ d: A rows of A columns.
                    let mut w = [[[0.0; 16]; A]; A];
                    for j in 0..A {
                        let column = line(&std::array::from_fn(|i| d(i, j)));
                        for i in 0..A {
                            w[i][j] = column[i];
                        }
                    }
                    // (Bᵀ d) B, stored as V_ξ with ξ = A * row + column.
                    for (i, row) in w.iter().enumerate() {
                        for (j, x) in line(row).iter().enumerate() {
                            let xi = A * i + j;
                            std::ptr::write_unaligned(
                                v.add((xi * tiles_pad + t) * c + c0) as *mut Chunk,
                                *x,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// What the output transform reads and writes: one panel of a band's products.
struct OutputBand<'a> {
    m: &'a [Lanes],
    out: Shape4,
    img: usize,
    tr0: usize,
    rows: usize,
    tile_cols: usize,
    channel0: usize,
    cols: usize,
    bias: &'a [Lanes],
    relu: bool,
    dst: OutPtr,
}

/// The output transform for tiles of `M` (patches of `A` = M + 2), `line` along columns then
/// rows.
impl<const M: usize, const A: usize, L: Fn(&[Chunk; A]) -> [Chunk; M]> SimdPass
    for OutputPass<'_, M, A, L>
{
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // the transform's index notation
    unsafe fn body(self) {
        let OutputPass(band, line) = self;
        let OutputBand {
            m,
            out,
            img,
            tr0,
            rows,
            tile_cols,
            channel0,
            cols,
            bias,
            relu,
            dst,
        } = band;
        for half in 0..2 {
            let valid = cols.saturating_sub(16 * half).min(16);
            if valid == 0 {
                continue;
            }
            let bias = bias[half].0;
            for r in 0..rows {
                for tc in 0..tile_cols {
                    let t = r * tile_cols + tc;
                    let product = |xi: usize| -> Chunk { m[(t * A * A + xi) * 2 + half].0 };
                    // Aᵀ m: M rows of A columns.
                    let mut s = [[[0.0; 16]; A]; M];
                    for j in 0..A {
                        let column = line(&std::array::from_fn(|i| product(A * i + j)));
                        for i in 0..M {
                            s[i][j] = column[i];
                        }
                    }
                    for (dy, row) in s.iter().enumerate() {
                        let oy = M * (tr0 + r) + dy;
                        if oy >= out.h {
                            break;
                        }
                        for (dx, v) in line(row).iter().enumerate() {
                            let ox = M * tc + dx;
                            if ox >= out.w {
                                break;
                            }
                            let mut v = add(*v, bias);
                            let (o, shortcut) =
                                dst.at(out.index(img, oy, ox, channel0 + 16 * half));
                            if !shortcut.is_null() {
                                for (l, x) in v.iter_mut().enumerate().take(valid) {
                                    *x += *shortcut.add(l);
                                }
                            }
                            if relu {
                                // As `f32::max`: NaN becomes 0, like the other kernels' ReLU.
                                for x in v.iter_mut() {
                                    *x = x.max(0.0);
                                }
                            }
                            if valid == 16 {
                                std::ptr::write_unaligned(o as *mut Chunk, v);
                            } else {
                                for (l, x) in v.iter().enumerate().take(valid) {
                                    *o.add(l) = *x;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
