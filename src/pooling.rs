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

    /// Length of a local feature over `channels` channels.
    pub fn feature_len(&self, channels: usize) -> usize {
        self.h * self.w * channels
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

impl Normalization {
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
    }

    #[test]
    fn words_round_up() {
        assert_eq!(Quantization::Sign2.words_per_row(17), 2);
        assert_eq!(Quantization::Bits1.words_per_row(64), 2);
    }
}
