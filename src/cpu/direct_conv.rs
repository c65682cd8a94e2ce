//! Direct convolution on register tiles (`microkernel`: AVX-512 or AVX2).
//!
//! The `gemm` crate runs its AVX2 kernels on stable Rust (its AVX-512 ones need nightly), half
//! of what an AVX-512 core does per cycle (docs/cpu_gemm.md). This kernel computes tiles of
//! `MR` neighbouring output pixels of one row by `NR` output channels in registers, reading
//! the NHWC input in place: for a row of pixels the values under one kernel tap form a
//! matrix whose rows are `stride_w * c` apart, so nothing is unfolded (no im2col pass through
//! memory) and only the weights are packed, once, when the layer is made. Each task first
//! copies the input rows its pixels read into a zero-padded block, so padding, and tiles that
//! hang over the right edge, need no special cases in the inner loop.

use super::conv::unfold_row;
use super::microkernel::{self, Lanes, OutPtr, Simd, Tile, TileGeometry, MR, NR};
use crate::shape::{Conv2dSpec, Shape4};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// Tiles a task aims to cover per weight panel, so that a panel read from cache serves many
/// tiles (a conv5 panel is 9 * 512 * 32 floats, 576 KiB).
const TILES_PER_BLOCK: usize = 32;

/// The weight panels a flat (1x1) block's tiles go through together: a quarter of a 2 MiB
/// L2 cache. Panel by panel, a block's rows were read again for every panel and each
/// tile's output written 128 bytes a pixel at a time; grouped, ResNet-50's 1x1 layers at
/// batch 8 took 12% less time alone with their maps out of cache, 6% in the pipeline.
const PANEL_GROUP_BYTES: usize = 256 << 10;

/// A convolution layer packed for [`DirectConv::run`].
pub struct DirectConv {
    spec: Conv2dSpec,
    simd: Simd,
    panels: usize,
    /// `[panel][(ky * kw + kx) * in_c + c][NR]`, zero past `out_c`.
    weights: Vec<Lanes>,
    /// `[panel][NR]`, zero past `out_c`.
    bias: Vec<Lanes>,
}

/// Writes one row of a zero-padded block: `left` zeros, `src`, zeros to the end; each value
/// once, so that a reused block needs no clearing first.
pub(super) fn pad_row(row: &mut [f32], left: usize, src: &[f32]) {
    let (pad, rest) = row.split_at_mut(left);
    let (mid, right) = rest.split_at_mut(src.len());
    pad.fill(0.0);
    mid.copy_from_slice(src);
    right.fill(0.0);
}

thread_local! {
    /// Each thread's zero-padded input block, kept between calls.
    pub(super) static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl DirectConv {
    /// Whether a layer with `out_w` output columns suits the kernel: tiles are `MR` pixels of
    /// one row, so narrow outputs would waste most of each tile.
    pub fn suits(out_w: usize) -> bool {
        let tiles = out_w.div_ceil(MR);
        4 * out_w >= 3 * tiles * MR
    }

    /// Packs the `[k][out_c]` weight matrix (`k = kh * kw * in_c` in `(ky, kx, c)` order) and
    /// the bias into panels of `NR` output channels, for tiles on `simd`.
    pub fn new(spec: Conv2dSpec, simd: Simd, weight_kn: &[f32], bias: &[f32]) -> Self {
        let (k, n) = (spec.k_total(), spec.out_c);
        debug_assert_eq!(weight_kn.len(), k * n);
        let panels = n.div_ceil(NR);
        let mut weights = vec![Lanes([0.0; 16]); panels * k * 2];
        let mut packed_bias = vec![Lanes([0.0; 16]); panels * 2];
        for p in 0..panels {
            for j in 0..NR.min(n - p * NR) {
                let o = p * NR + j;
                packed_bias[p * 2 + j / 16].0[j % 16] = bias[o];
                for kk in 0..k {
                    weights[(p * k + kk) * 2 + j / 16].0[j % 16] = weight_kn[kk * n + o];
                }
            }
        }
        DirectConv {
            spec,
            simd,
            panels,
            weights,
            bias: packed_bias,
        }
    }

    /// The instruction set its tiles run on.
    pub fn simd(&self) -> Simd {
        self.simd
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
        debug_assert_eq!(input.len(), shape.len());
        debug_assert_eq!(output.len(), out.len());
        let w = self.spec.window;
        if (w.kh, w.kw, w.stride_h, w.stride_w, w.pad_h, w.pad_w) == (1, 1, 1, 1, 0, 0) {
            self.run_flat(FlatRows::InPlace(input), shortcut, out, output);
        } else if Self::suits(out.w) {
            self.run_rows(input, shape, shortcut, out, output);
        } else {
            self.run_flat(FlatRows::Unfolded(input, shape), shortcut, out, output);
        }
    }

    /// Tiles along output rows, reading a zero-padded copy of the rows under them.
    fn run_rows(
        &self,
        input: &[f32],
        shape: Shape4,
        shortcut: Option<&[f32]>,
        out: Shape4,
        output: &mut [f32],
    ) {
        let win = self.spec.window;
        let c = shape.c;
        let tiles = out.w.div_ceil(MR);
        let max_rows = TILES_PER_BLOCK.div_ceil(tiles).clamp(1, out.h);
        let dst = OutPtr::new(output, shortcut);
        let rows = (out.h, out.h.div_ceil(max_rows));
        for_each_block(out.n, rows, self.panels, |img, rows, panels| {
            let (oy0, oy1) = (rows.start, rows.end);
            BLOCK.with(|cell| {
                let mut padded = cell.borrow_mut();
                let row_len = self.pad_block(input, shape, img, oy0, oy1, tiles, &mut padded);
                let px_stride = win.stride_w * c;
                let geometry = TileGeometry {
                    px_stride,
                    row_stride: row_len,
                    kh: win.kh,
                    window_row: win.kw * c,
                };
                for p in panels {
                    for oy in oy0..oy1 {
                        let row = (oy - oy0) * win.stride_h * row_len;
                        for x0 in (0..out.w).step_by(MR) {
                            let a = &padded[row + x0 * px_stride..];
                            let at = out.index(img, oy, x0, 0);
                            // SAFETY: this task alone writes rows oy0..oy1 of image img in
                            // panels `panels`; `padded` holds every value the tile reads
                            // (`pad_block` covers whole tiles).
                            unsafe {
                                self.tile(a, geometry, p, dst, at, out.c, MR.min(out.w - x0))
                            };
                        }
                    }
                }
            });
        });
    }

    /// Tiles of `MR` consecutive output pixels (across rows and images), each pixel's
    /// window a row of `k` values that `rows` gives: a 1x1 stride-1 layer's input read in
    /// place (a plain matrix product), or unfolded (im2col) for outputs too narrow to fill
    /// tiles of one row.
    fn run_flat(
        &self,
        rows: FlatRows<'_>,
        shortcut: Option<&[f32]>,
        out: Shape4,
        output: &mut [f32],
    ) {
        let k = self.spec.k_total();
        let pixels = out.n * out.h * out.w;
        let tiles = pixels.div_ceil(MR);
        // Blocks of up to 4 MiB of rows, whole tiles of them.
        let max_tiles = ((1usize << 20) / (k * MR)).clamp(1, TILES_PER_BLOCK);
        let dst = OutPtr::new(output, shortcut);
        let geometry = TileGeometry {
            px_stride: k,
            row_stride: 0,
            kh: 1,
            window_row: k,
        };
        let blocks = (tiles, tiles.div_ceil(max_tiles));
        for_each_block(1, blocks, self.panels, |_, block_tiles, panels| {
            BLOCK.with(|cell| {
                let mut buf = cell.borrow_mut();
                rows.fill(&self.spec, (out, pixels), block_tiles.clone(), &mut buf);
                // Tile by tile through a group of panels: a tile's output channels of the
                // group are written together and its rows are read once per group.
                let group = (PANEL_GROUP_BYTES / (k * NR * 4)).max(1);
                for p0 in panels.clone().step_by(group) {
                    for t in block_tiles.clone() {
                        let t0 = t * MR;
                        let a = rows.tile(k, (t0, pixels), block_tiles.start * MR, &buf);
                        for p in p0..(p0 + group).min(panels.end) {
                            // SAFETY: this task alone writes the pixels of tiles
                            // `block_tiles` in panels `panels`; `a` holds `MR` whole pixel
                            // rows.
                            unsafe {
                                self.tile(
                                    a,
                                    geometry,
                                    p,
                                    dst,
                                    t0 * out.c,
                                    out.c,
                                    MR.min(pixels - t0),
                                )
                            };
                        }
                    }
                }
            });
        });
    }

    /// Copies the input rows that output rows `oy0..oy1` of image `img` read into `padded`,
    /// with zeros for the padding and for the columns that whole tiles read past the edge.
    /// Returns the block's row length in floats.
    #[allow(clippy::too_many_arguments)]
    fn pad_block(
        &self,
        input: &[f32],
        shape: Shape4,
        img: usize,
        oy0: usize,
        oy1: usize,
        tiles: usize,
        padded: &mut Vec<f32>,
    ) -> usize {
        let win = self.spec.window;
        let c = shape.c;
        let cols = (tiles * MR - 1) * win.stride_w + win.kw;
        let rows = (oy1 - oy0 - 1) * win.stride_h + win.kh;
        let row_len = cols * c;
        if padded.len() < rows * row_len {
            padded.resize(rows * row_len, 0.0);
        }
        // Input columns past `cols` are never read (strides that do not divide the width).
        // Each value is written once: the input's, or a zero for the padding.
        let copied = shape.w.min(cols.saturating_sub(win.pad_w)) * c;
        let left = (win.pad_w * c).min(row_len);
        for (r, row) in padded[..rows * row_len]
            .chunks_exact_mut(row_len)
            .enumerate()
        {
            let iy = (oy0 * win.stride_h + r) as isize - win.pad_h as isize;
            if iy < 0 || iy >= shape.h as isize || copied == 0 {
                row.fill(0.0);
                continue;
            }
            let src = &input[shape.index(img, iy as usize, 0, 0)..][..copied];
            pad_row(row, left, src);
        }
        row_len
    }

    /// Runs one tile of weight panel `p`: `pixels` output pixels from `a` (as `geometry` lays
    /// them out) into `dst` at `at`, pixels `out_stride` floats apart.
    ///
    /// # Safety
    /// `dst` points at the output; no other thread writes these pixels' channels of panel `p`.
    /// `a` holds `MR` whole pixel windows.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        a: &[f32],
        geometry: TileGeometry,
        p: usize,
        dst: OutPtr,
        at: usize,
        out_stride: usize,
        pixels: usize,
    ) {
        let g = geometry;
        debug_assert!(
            a.len() >= (MR - 1) * g.px_stride + (g.kh - 1) * g.row_stride + g.window_row,
            "tile reads past its block"
        );
        let k = self.spec.k_total();
        let (out, shortcut) = dst.at(at + p * NR);
        microkernel::tile(
            self.simd,
            Tile {
                a: a.as_ptr(),
                geometry: g,
                b: self.weights[p * k * 2..].as_ptr() as *const f32,
                bias: self.bias[p * 2..].as_ptr() as *const f32,
                relu: self.spec.relu,
                out,
                shortcut,
                out_stride,
                pixels,
                cols: NR.min(self.spec.out_c - p * NR),
            },
        );
    }
}

/// Where [`DirectConv::run_flat`]'s rows (one pixel's window of `k` values each) come from.
#[derive(Clone, Copy)]
enum FlatRows<'a> {
    /// A 1x1 stride-1 layer's NHWC input, read in place; only a last partial tile is
    /// copied, zero-padded, so that no tile reads past the input.
    InPlace(&'a [f32]),
    /// Unfolded (im2col) from the input of this shape into the block's buffer.
    Unfolded(&'a [f32], Shape4),
}

impl<'a> FlatRows<'a> {
    /// Prepares `buf` for the tiles `block` of an output `out` of `pixels` pixels.
    fn fill(
        self,
        spec: &Conv2dSpec,
        (out, pixels): (Shape4, usize),
        block: Range<usize>,
        buf: &mut Vec<f32>,
    ) {
        let k = spec.k_total();
        let q0 = block.start * MR;
        let q1 = (block.end * MR).min(pixels);
        buf.clear();
        match self {
            FlatRows::InPlace(input) => {
                if q1 - q0 < block.len() * MR {
                    let last = q1 - (block.end - 1) * MR;
                    buf.resize(MR * k, 0.0);
                    buf[..last * k].copy_from_slice(&input[(q1 - last) * k..]);
                }
            }
            FlatRows::Unfolded(input, shape) => {
                // Whole tiles: rows past the last pixel stay zero and are not stored.
                buf.resize(block.len() * MR * k, 0.0);
                for (r, row) in buf.chunks_mut(k).take(q1 - q0).enumerate() {
                    unfold_row(spec, input, shape, out, q0 + r, row);
                }
            }
        }
    }

    /// The `MR` rows of the tile at pixel `t0`, in a block starting at pixel `q0` whose
    /// buffer [`FlatRows::fill`] prepared.
    fn tile<'b>(
        self,
        k: usize,
        (t0, pixels): (usize, usize),
        q0: usize,
        buf: &'b [f32],
    ) -> &'b [f32]
    where
        'a: 'b,
    {
        match self {
            FlatRows::InPlace(input) if t0 + MR <= pixels => &input[t0 * k..],
            FlatRows::InPlace(_) => buf,
            FlatRows::Unfolded(..) => &buf[(t0 - q0) * k..],
        }
    }
}

/// Runs `task(image, rows, panels)` on all cores for every block of `rows` (of each of
/// `images`: at least `min_blocks` blocks an image) and range of the `panels` weight panels,
/// the blocks and ranges chosen so that the tasks share out evenly among the threads. Every
/// row of every image meets every panel in exactly one task.
pub(super) fn for_each_block(
    images: usize,
    (rows, min_blocks): (usize, usize),
    panels: usize,
    task: impl Fn(usize, Range<usize>, Range<usize>) + Sync,
) {
    let blocks_per_image = even_blocks(images, min_blocks, rows);
    let blocks = images * blocks_per_image;
    let splits = panel_splits(panels, blocks);
    (0..blocks * splits).into_par_iter().for_each(|t| {
        let (block, split) = (t / splits, t % splits);
        task(
            block / blocks_per_image,
            share(rows, blocks_per_image, block % blocks_per_image),
            share(panels, splits, split),
        )
    });
}

/// How many ranges of `panels` weight panels to split each of `blocks` pixel blocks into, so
/// that there are tasks for every thread (conv5 at batch 1 has two blocks) and they share out
/// evenly.
fn panel_splits(panels: usize, blocks: usize) -> usize {
    let threads = rayon::current_num_threads();
    let splits = (2 * threads).div_ceil(blocks).clamp(1, panels);
    // Prefer a count that, with the blocks, is a multiple of the threads.
    (splits..=panels)
        .take(threads)
        .find(|s| (blocks * s).is_multiple_of(threads))
        .unwrap_or(splits)
}

/// Part `i` of `parts` nearly equal parts of `0..total`.
fn share(total: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    i * total / parts..(i + 1) * total / parts
}

/// Blocks per image: at least `min`, at most `most`, and if it can be, enough that the
/// blocks of all `images` are a multiple of the threads, so that none waits for the last.
fn even_blocks(images: usize, min: usize, most: usize) -> usize {
    let threads = rayon::current_num_threads();
    (min..=most)
        .take(threads)
        .find(|b| (images * b).is_multiple_of(threads))
        .unwrap_or(min)
}
