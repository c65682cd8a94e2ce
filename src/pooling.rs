//! Options of the pooling stage, shared by the GPU kernels and the CPU reference.
//!
//! Feature layout: a cross-layer feature is stored per image as `[D_{t+1}][D_t']`,
//! channel-major: row `k` is `P_k = sum_i x_i a_{i,k}`, the local features pooled with the
//! weights of channel `k` of layer t+1, and `D_t'` is the local-feature length (`m*n*D_t`
//! for an m x n neighbourhood, or the PCA dimension).

use crate::error::{Error, Result};

/// Spatial extent of a local feature: the unit itself (1x1, the default) or the m x n
/// neighbourhood around it, concatenated as `(dy, dx, channel)` with zeros outside the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalWindow {
    /// Rows (m).
    pub h: usize,
    /// Columns (n).
    pub w: usize,
}

impl LocalWindow {
    /// The unit alone.
    pub const UNIT: LocalWindow = LocalWindow { h: 1, w: 1 };

    /// An m x n window; both must be odd so that it is centred on the unit.
    pub fn new(h: usize, w: usize) -> Result<Self> {
        if h == 0 || w == 0 || h.is_multiple_of(2) || w.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "local-feature window {h}x{w} must have odd, non-zero sides so it is centred on its unit"
            )));
        }
        Ok(LocalWindow { h, w })
    }

    /// Parses `MxN` (`1x1`, `3x3`), as the command line and settings files spell a window.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("'{s}' is not a window of the form MxN, e.g. 3x3"));
        let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let n = |v: &str| v.trim().parse::<usize>().map_err(|_| bad());
        LocalWindow::new(n(h)?, n(w)?)
    }

    /// Length of a local feature over `channels` channels.
    pub fn feature_len(&self, channels: usize) -> usize {
        self.h * self.w * channels
    }
}

impl std::fmt::Display for LocalWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.h, self.w)
    }
}

/// What pools the local features of cross-layer pooling.
pub enum Guide<'a, T> {
    /// Activations of layer t+1 (or of layer t itself, for a Gram matrix or second moment),
    /// with the local window to take around each unit.
    Layer(&'a T, LocalWindow),
    /// A constant 1 for every unit: the output has one row, the plain sum of the local
    /// features (the first moment that PCA needs).
    Ones,
}

// By hand: a derive would ask `T: Copy`, though only a reference is held.
impl<T> Clone for Guide<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Guide<'_, T> {}

/// One cross-layer pooling over tensors `T`: `out[g]` = the sum over the units i of images
/// `g*G..(g+1)*G` of `a_i x_i^T` (G = `group`), or with [`ChannelPooling::Max`] their
/// element-wise maximum.
pub struct CrossLayer<'a, T> {
    /// What weights the local features (`a`).
    pub guide: Guide<'a, T>,
    /// Layer t's activations, the local features.
    pub x: &'a T,
    /// The neighbourhood each local feature spans.
    pub x_win: LocalWindow,
    /// Images pooled into one output (1 per image; the batch for PCA's moments).
    pub group: usize,
    /// Sum or maximum over the units.
    pub mode: ChannelPooling,
}

impl<T> Clone for CrossLayer<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for CrossLayer<'_, T> {}

impl<'a, T> CrossLayer<'a, T> {
    /// Per-image sum pooling of `x` in windows `x_win`, guided by `guide`.
    pub fn new(guide: Guide<'a, T>, x: &'a T, x_win: LocalWindow) -> Self {
        CrossLayer {
            guide,
            x,
            x_win,
            group: 1,
            mode: ChannelPooling::Sum,
        }
    }

    /// The same pooling over groups of `group` images.
    pub fn grouped(self, group: usize) -> Self {
        CrossLayer { group, ..self }
    }

    /// The same pooling with `mode` over the units.
    pub fn pooled(self, mode: ChannelPooling) -> Self {
        CrossLayer { mode, ..self }
    }
}

/// Normalisation steps, applied in the paper's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Normalization {
    /// L2-normalise each pooling channel (row) `P_k`.
    pub channel_l2: bool,
    /// Signed square root `sign(v) sqrt(|v|)` of every value.
    pub signed_sqrt: bool,
    /// L2-normalise the whole vector (for retrieval).
    pub global_l2: bool,
}

/// The sum of the squares of `v`, in f64, in the one order the host backends share (the CPU
/// backend and the reference agree bit for bit): see [`lane_sum`].
#[inline(always)]
pub fn sum_of_squares<T: Copy + Into<f64>>(v: &[T]) -> f64 {
    lane_sum(v, |x| x * x)
}

/// The sum of the absolute values of `v`, in f64, in [`sum_of_squares`]'s order.
#[inline(always)]
pub fn sum_of_abs<T: Copy + Into<f64>>(v: &[T]) -> f64 {
    lane_sum(v, f64::abs)
}

/// The sum of `term(x)` over `v`, in f64: eight interleaved partial sums, added pairwise at
/// the end. Unlike one running sum, this order vectorises, at any SIMD width.
#[inline(always)]
fn lane_sum<T: Copy + Into<f64>>(v: &[T], term: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += term(x.into());
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += term(x.into());
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

impl Normalization {
    /// The scale of a row whose sum of squares is `sum_sq`: `1 / ||row||` with channel L2
    /// (1 for a zero row, which stays zero), else 1. Rows are multiplied by it, in f64.
    #[inline(always)]
    pub fn row_scale(&self, sum_sq: f64) -> f64 {
        let n = sum_sq.sqrt();
        if self.channel_l2 && n > 0.0 {
            1.0 / n
        } else {
            1.0
        }
    }

    /// The sum of the squares of a row after its scale `r` and the signed square root, from
    /// the row's sums of squares and of absolute values, in closed form: `|r x|` each with
    /// the square root (its square), `(r x)^2` without. The global L2 norm is the square root
    /// of these rows' sum, so it needs no second pass of square roots.
    #[inline(always)]
    pub fn transformed_sum_sq(&self, r: f64, sum_sq: f64, sum_abs: f64) -> f64 {
        if self.signed_sqrt {
            r * sum_abs
        } else {
            r * r * sum_sq
        }
    }

    /// The paper's classification setting: channel L2, then signed square root.
    pub const PAPER: Normalization = Normalization {
        channel_l2: true,
        signed_sqrt: true,
        global_l2: false,
    };
    /// The paper's retrieval setting: channel L2, signed square root, global L2.
    pub const RETRIEVAL: Normalization = Normalization {
        channel_l2: true,
        signed_sqrt: true,
        global_l2: true,
    };
    /// Nothing: raw pooled sums.
    pub const NONE: Normalization = Normalization {
        channel_l2: false,
        signed_sqrt: false,
        global_l2: false,
    };

    /// Bit flags as the WGSL kernel reads them.
    pub fn flags(&self) -> u32 {
        self.channel_l2 as u32 | (self.signed_sqrt as u32) << 1 | (self.global_l2 as u32) << 2
    }
}

/// Compact encodings of a feature's signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantization {
    /// {-1, 0, +1} in 2 bits: 16 values per u32, value j at bits `2 (j % 16)`:
    /// `00` zero, `01` positive, `10` negative.
    Sign2,
    /// 1 bit per value, set when positive: 32 values per u32, value j at bit `j % 32`.
    Bits1,
}

impl Quantization {
    /// Values per 32-bit word.
    pub fn values_per_word(self) -> usize {
        match self {
            Quantization::Sign2 => 16,
            Quantization::Bits1 => 32,
        }
    }

    /// Words per row of `cols` values (rows are padded to whole words).
    pub fn words_per_row(self, cols: usize) -> usize {
        cols.div_ceil(self.values_per_word())
    }

    /// The code of one value, in the low bits.
    fn code(self, v: f32) -> u32 {
        match self {
            Quantization::Sign2 if v > 0.0 => 1,
            Quantization::Sign2 if v < 0.0 => 2,
            Quantization::Sign2 => 0,
            Quantization::Bits1 => u32::from(v > 0.0),
        }
    }

    /// Packs each row of `[rows][cols]` values into whole words, value j of a row at bits
    /// `bits * (j % values_per_word)` of word `j / values_per_word` (`shaders/quantize.wgsl`
    /// does the same on the GPU).
    pub fn pack(self, data: &[f32], cols: usize) -> Vec<u32> {
        let per = self.values_per_word();
        let bits = 32 / per;
        let mut out =
            Vec::with_capacity(data.len().div_ceil(cols.max(1)) * self.words_per_row(cols));
        for row in data.chunks(cols.max(1)) {
            for chunk in row.chunks(per) {
                let word = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |w, (j, &v)| w | self.code(v) << (bits * j));
                out.push(word);
            }
        }
        out
    }
}

crate::choice! {
    /// How cross-layer pooling combines the units of an image into `P_k` (the paper's channel
    /// pooling, section 4.3).
    #[derive(Hash)]
    pub enum ChannelPooling: default Sum {
        /// `P_k = sum_i a_ik x_i`: the paper's method.
        Sum = "sum",
        /// `P_k = max_i a_ik x_i`, element-wise over the units: the variant the paper evaluates
        /// and finds worse than the sum.
        Max = "max",
    }
}

impl ChannelPooling {
    /// True for the default (sum), which settings files leave out.
    pub fn is_sum(&self) -> bool {
        *self == ChannelPooling::Sum
    }
}

/// How baseline pooling combines the units of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionPoolMode {
    /// Sum.
    Sum,
    /// Maximum.
    Max,
}

/// Regions `(y0, y1, x0, x1)` (half-open) of a spatial pyramid over an `h` x `w` map: level L
/// splits it into 2^L x 2^L cells, levels 0..=`max_level`, coarsest first, cells row-major.
/// Cell boundaries are `floor(i * h / 2^L)`, so every unit falls in exactly one cell per level;
/// a level finer than the map gives empty cells, which is an error.
pub fn pyramid_regions(h: usize, w: usize, max_level: u32) -> Result<Vec<[u32; 4]>> {
    let mut out = Vec::new();
    for level in 0..=max_level {
        let n = 1usize << level;
        if n > h || n > w {
            return Err(Error::Config(format!(
                "spatial pyramid level {level} needs at least {n}x{n} units, the map is {h}x{w}"
            )));
        }
        for cy in 0..n {
            for cx in 0..n {
                out.push([
                    (cy * h / n) as u32,
                    ((cy + 1) * h / n) as u32,
                    (cx * w / n) as u32,
                    ((cx + 1) * w / n) as u32,
                ]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_cells_tile_the_map_at_every_level() {
        let (h, w) = (7, 5);
        let r = pyramid_regions(h, w, 2).unwrap();
        assert_eq!(r.len(), 1 + 4 + 16);
        for (start, n) in [(0, 1), (1, 4), (5, 16)] {
            let covered: usize = r[start..start + n]
                .iter()
                .map(|b| ((b[1] - b[0]) * (b[3] - b[2])) as usize)
                .sum();
            assert_eq!(covered, h * w);
        }
        assert!(pyramid_regions(3, 3, 2).is_err());
    }

    #[test]
    fn windows_must_be_centred() {
        assert!(LocalWindow::new(2, 3).is_err());
        assert_eq!(LocalWindow::new(3, 3).unwrap().feature_len(512), 4608);
        let w = LocalWindow::parse("3x5").unwrap();
        assert_eq!((w.h, w.w, w.to_string()), (3, 5, "3x5".to_string()));
        assert!(LocalWindow::parse("2x2").is_err());
        assert!(LocalWindow::parse("3").is_err());
    }

    #[test]
    fn packing_follows_the_documented_layout() {
        let row = [1.0, -2.0, 0.0, 3.0, -0.0, f32::NAN];
        // Sign2: 01 positive, 10 negative, 00 zero (and NaN), value j at bits 2j.
        assert_eq!(
            Quantization::Sign2.pack(&row, 6),
            vec![0b01 | 0b10 << 2 | 0b01 << 6]
        );
        assert_eq!(Quantization::Bits1.pack(&row, 6), vec![0b1001]);
        // Rows are padded to whole words: 33 values take two words per row.
        let rows: Vec<f32> = (0..66)
            .map(|i| if i % 33 == 32 { 1.0 } else { -1.0 })
            .collect();
        assert_eq!(Quantization::Bits1.pack(&rows, 33), vec![0, 1, 0, 1]);
    }

    #[test]
    fn words_round_up() {
        assert_eq!(Quantization::Sign2.words_per_row(17), 2);
        assert_eq!(Quantization::Bits1.words_per_row(64), 2);
    }
}
