//! A network's weights in memory, as f32: loaded from a safetensors file by
//! `crate::store::weights_file` (the file format), or made up for benchmarks.

use super::arch::{Arch, LayerKind};
use super::preprocess::Preprocess;
use crate::error::Result;
use crate::weights::Conv2dWeights;
use std::path::PathBuf;

/// The weights of a network's layers, as f32, plus how its input must be preprocessed.
#[derive(Clone, Debug)]
pub struct ModelWeights {
    /// Architecture.
    pub arch: Arch,
    /// Input preprocessing.
    pub preprocess: Preprocess,
    /// True if the file carried no preprocessing metadata and torchvision's was assumed.
    pub preprocess_assumed: bool,
    /// `(layer name, weights)` for each conv or fc layer loaded, in execution order.
    pub layers: Vec<(String, Conv2dWeights)>,
    /// Where the weights came from.
    pub source: PathBuf,
}

impl ModelWeights {
    /// Random weights (He-scaled, fixed seed) for `arch` up to `last` (all conv layers if
    /// `None`), with torchvision preprocessing: for benchmarks, where values do not matter.
    pub fn synthetic(arch: Arch, last: Option<&str>) -> Result<Self> {
        let all = arch.layers();
        let end = layers_to_load(arch, last)?;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            // xorshift64*: fast, and plenty for benchmark weights.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0
                - 1.0
        };
        let mut layers = Vec::new();
        for layer in &all[..end] {
            if let LayerKind::Conv { spec, .. } = &layer.kind {
                // A residual branch's last convolution at a fifth of He's scale, as trained
                // ResNets' last batch norms of a block shrink it: activations stay of order
                // one through the blocks instead of doubling in variance at each.
                let branch_end = if layer.shortcut.is_some() { 0.2 } else { 1.0 };
                let scale = (6.0 / spec.k_total() as f32).sqrt() * branch_end;
                let weight = (0..spec.weight_len()).map(|_| next() * scale).collect();
                let bias = (0..spec.out_c).map(|_| next() * 0.01).collect();
                layers.push((layer.name.clone(), Conv2dWeights::new(*spec, weight, bias)?));
            }
        }
        Ok(ModelWeights {
            arch,
            preprocess: Preprocess::TORCHVISION,
            preprocess_assumed: true,
            layers,
            source: PathBuf::from("(synthetic)"),
        })
    }

    /// Weights of layer `name`, if loaded.
    pub fn layer(&self, name: &str) -> Option<&Conv2dWeights> {
        self.layers.iter().find(|(n, _)| n == name).map(|(_, w)| w)
    }
}

/// Number of leading layers of `arch` to load: through `last`, or through the last conv layer
/// of the trunk when `None` (the classifier holds most of the bytes and is loaded on request).
pub(crate) fn layers_to_load(arch: Arch, last: Option<&str>) -> Result<usize> {
    match last {
        Some(name) => Ok(arch.layer_index(name)? + 1),
        None => Ok(arch
            .layers()
            .iter()
            .rposition(|l| {
                matches!(
                    l.kind,
                    LayerKind::Conv {
                        from_linear: false,
                        ..
                    }
                )
            })
            .map_or(0, |i| i + 1)),
    }
}
