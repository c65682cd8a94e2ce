//! What to compute, as a user asks for it: the layers, the pooling and its window, the
//! normalisation ([`FeatureRequest`]), and the checked [`FeatureSpec`] it gives.

use super::{FeatureSpec, GridMatch, Representation};
use crate::choice::value_name;
use crate::error::{Error, Result};
use crate::model::Arch;
use crate::pooling::{ChannelPooling, LocalWindow, Normalization, RegionPoolMode};

/// The feature a user asks for (`extract`'s flags, the Python keywords, a recorded run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureRequest {
    /// Layers t,t+1 (one for the baselines); empty for the defaults ([`default_layers`]).
    pub layers: Vec<String>,
    /// Pooling method.
    pub pooling: Pooling,
    /// Cross-layer pooling's combination over units.
    pub channel_pooling: ChannelPooling,
    /// Local-feature window on layer t.
    pub window: LocalWindow,
    /// Finest pyramid level (sum/max pooling).
    pub levels: u32,
    /// Normalisation.
    pub norm: NormPreset,
}

impl Default for FeatureRequest {
    /// The paper's cross-layer pooling of the default pair, normalised for classification.
    fn default() -> Self {
        FeatureRequest {
            layers: Vec::new(),
            pooling: Pooling::CrossLayer,
            channel_pooling: ChannelPooling::Sum,
            window: LocalWindow::UNIT,
            levels: 0,
            norm: NormPreset::Paper,
        }
    }
}

crate::choice! {
    /// Pooling method.
    pub enum Pooling {
        /// Cross-layer pooling (the paper's method) of the two --layers, on one grid (two conv
        /// layers; fc6,fc8 for the paper's FC-FC).
        CrossLayer = "cross-layer",
        /// Cross-layer pooling of a conv layer and a later fully connected one (the paper's
        /// FC-Conv, e.g. conv5_3,fc6): the conv layer summed within each receptive field of the
        /// fc layer's units and square-rooted.
        FcConv = "fc-conv",
        /// Baseline: Gram matrix of the first layer's local features.
        Gram = "gram",
        /// Baseline: sum pooling of the first layer (over a pyramid with --levels).
        Sum = "sum",
        /// Baseline: max pooling of the first layer (over a pyramid with --levels).
        Max = "max",
    }
}

impl Pooling {
    /// Cross-layer pooling, on one grid or over receptive fields.
    pub fn is_cross_layer(self) -> bool {
        matches!(self, Pooling::CrossLayer | Pooling::FcConv)
    }
}

crate::choice! {
    /// Normalisation preset.
    pub enum NormPreset {
        /// Per-channel L2, then signed square root (the paper, for classification).
        Paper = "paper",
        /// Per-channel L2, signed square root, global L2 (the paper, for retrieval).
        Retrieval = "retrieval",
        /// Signed square root and global L2 (for sum/max baselines).
        SqrtL2 = "sqrt-l2",
        /// Global L2 only (the SPoC retrieval baseline: sum pooling, then L2).
        L2 = "l2",
        /// Raw pooled values.
        None = "none",
    }
}

impl NormPreset {
    /// The normalisation steps of the preset.
    pub fn steps(self) -> Normalization {
        match self {
            NormPreset::Paper => Normalization::PAPER,
            NormPreset::Retrieval => Normalization::RETRIEVAL,
            NormPreset::SqrtL2 => Normalization {
                channel_l2: false,
                signed_sqrt: true,
                global_l2: true,
            },
            NormPreset::L2 => Normalization {
                channel_l2: false,
                signed_sqrt: false,
                global_l2: true,
            },
            NormPreset::None => Normalization::NONE,
        }
    }
}

/// The layers `extract` pools when `--layers` is not given: the paper's pair for `arch`, or
/// for FC-Conv pooling its last conv layer and fc6.
pub fn default_layers(arch: Arch, pooling: Pooling) -> Vec<String> {
    let (t, t1) = match pooling {
        Pooling::FcConv => arch.fc_conv_pair(),
        _ => arch.default_pair(),
    };
    vec![t.to_string(), t1.to_string()]
}

impl FeatureRequest {
    /// The layers pooled: those asked for, or the defaults of `arch` and the pooling.
    pub fn layers_for(&self, arch: Arch) -> Vec<String> {
        if self.layers.is_empty() {
            default_layers(arch, self.pooling)
        } else {
            self.layers.clone()
        }
    }

    /// The feature asked for, checked against `arch`.
    pub fn spec(&self, arch: Arch) -> Result<FeatureSpec> {
        if self.pooling == Pooling::FcConv && matches!(arch, Arch::Resnet50 | Arch::Resnet101) {
            return Err(Error::Config(format!(
                "--pooling fc-conv pools a conv layer over a fully connected layer's receptive \
                 fields; {arch} ends in global average pooling and fc, which have no grid \
                 (use vgg16, vgg19 or alexnet, or cross-layer pooling of two of its layers)"
            )));
        }
        let layers = &self.layers_for(arch)[..];
        let (pooling, channel, window, levels, norm) = (
            self.pooling,
            self.channel_pooling,
            self.window,
            self.levels,
            self.norm,
        );
        let first = || {
            layers
                .first()
                .cloned()
                .ok_or_else(|| Error::Config("no layer given (--layers)".into()))
        };
        if !pooling.is_cross_layer() && !channel.is_sum() {
            return Err(Error::Config(format!(
            "--channel-pooling {} applies to cross-layer pooling (--pooling cross-layer or fc-conv), not to --pooling {}",
            value_name(&channel),
            value_name(&pooling)
        )));
        }
        let repr = match pooling {
            Pooling::CrossLayer | Pooling::FcConv => match layers {
                [t, t1] => Representation::CrossLayer {
                    local: t.clone(),
                    guide: t1.clone(),
                    window,
                    channel,
                    grid: if pooling == Pooling::FcConv {
                        GridMatch::ReceptiveField
                    } else {
                        GridMatch::Same
                    },
                },
                _ => {
                    return Err(Error::Config(format!(
                        "{} pooling needs two layers (--layers t,t+1), got {}",
                        value_name(&pooling),
                        if layers.is_empty() {
                            "none".to_string()
                        } else {
                            layers.join(",")
                        }
                    )))
                }
            },
            Pooling::Gram => Representation::Gram {
                local: first()?,
                window,
            },
            Pooling::Sum | Pooling::Max => Representation::Region {
                local: first()?,
                mode: if pooling == Pooling::Sum {
                    RegionPoolMode::Sum
                } else {
                    RegionPoolMode::Max
                },
                levels,
            },
        };
        let spec = FeatureSpec {
            repr,
            norm: norm.steps(),
        };
        spec.validate(arch)?;
        Ok(spec)
    }
}
