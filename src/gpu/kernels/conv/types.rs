//! The storage types of a convolution variant, and the WGSL rewrites that make it from the
//! one reviewed source of each tile.

use super::tile::ConvTile;
use super::F16_MAX;
use crate::error::{Error, Result};
use crate::gpu::{shaders, Dtype};

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
    pub(super) fn rewrites(self) -> [(&'static str, String); 4] {
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
    pub(super) fn epilogue_rewrites(self) -> [(&'static str, String); 2] {
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
        pairs.extend_from_slice(tile.constants());
        tile.shader().specialise(&pairs)
    }
}
