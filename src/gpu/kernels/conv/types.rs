//! The storage types of a convolution variant, and the WGSL type rewrites and override
//! constants that make it from the one reviewed source of each tile.

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
    /// The line rewrites that make this variant of the scalar kernels (the prelude's type
    /// aliases).
    fn rewrites(self) -> [(&'static str, String); 3] {
        [
            (
                "alias in_t = f32;",
                format!("alias in_t = {};", self.input.wgsl()),
            ),
            self.output_rewrite(),
            (
                "alias w_t = f32;",
                format!("alias w_t = {};", self.weights.wgsl()),
            ),
        ]
    }

    /// The rewrite of the type the epilogue stores (also split-K's reduction's).
    pub(super) fn output_rewrite(self) -> (&'static str, String) {
        (
            "alias out_t = f32;",
            format!("alias out_t = {};", self.output.wgsl()),
        )
    }

    /// The epilogue's override constants: the range a layer of these weights must stay in
    /// (`ACT_LIMIT`, declared f32's largest value; f16's for f16 weights), also for split-K's
    /// reduction.
    pub(super) fn epilogue_constants(self) -> &'static [(&'static str, f64)] {
        match self.weights {
            Dtype::F32 => &[],
            Dtype::F16 => &[("ACT_LIMIT", F16_MAX as f64)],
        }
    }

    /// `tile`'s kernel specialised to these types. The cooperative-matrix kernel takes f16
    /// weights only, so it has no weights type or range to set.
    pub fn shader(self, tile: ConvTile) -> Result<shaders::Shader> {
        let r = self.rewrites();
        let (rewrites, limit) = match tile {
            ConvTile::Coop if self.weights != Dtype::F16 => {
                return Err(Error::Config(
                    "the cooperative-matrix convolution takes f16 weights only".into(),
                ))
            }
            // Its range is f16's, declared in its source.
            ConvTile::Coop => (&r[..2], &[][..]),
            _ => (&r[..], self.epilogue_constants()),
        };
        let pairs: Vec<(&str, &str)> = rewrites.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let constants: Vec<(&'static str, f64)> =
            tile.constants().iter().chain(limit).copied().collect();
        Ok(tile.shader().specialise(&pairs)?.with_constants(&constants))
    }
}
