//! What feature to compute from a network's activations.

mod request;

pub use request::{default_layers, FeatureRequest, NormPreset, Pooling};

use crate::error::{Error, Result};
use crate::model::Arch;
use crate::pooling::{ChannelPooling, LocalWindow, Normalization, RegionPoolMode};

/// The representation computed from the activations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Representation {
    /// Cross-layer pooling: local features of layer `local` (t), pooled once per channel of
    /// layer `guide` (t+1) with that channel's activations as weights.
    /// Output per image: `[D_guide][D_local']` (see `pooling` for the layout).
    CrossLayer {
        /// Layer t.
        local: String,
        /// Layer t+1 (on the same grid, or a coarser one with [`GridMatch::ReceptiveField`]).
        guide: String,
        /// Local-feature window on layer t.
        window: LocalWindow,
        /// Sum (the paper's method) or maximum over the units.
        channel: ChannelPooling,
        /// How the units of layer t meet those of layer t+1.
        grid: GridMatch,
    },
    /// Baseline: the Gram matrix `X^T X` of one layer's local features: `[D'][D']`.
    Gram {
        /// The layer.
        local: String,
        /// Local-feature window.
        window: LocalWindow,
    },
    /// Baseline: sum or max pooling of one layer over a spatial pyramid of levels
    /// `0..=levels` (0: the whole map): `[regions][D]`.
    Region {
        /// The layer.
        local: String,
        /// Sum or max.
        mode: RegionPoolMode,
        /// Finest pyramid level.
        levels: u32,
    },
}

/// How cross-layer pooling pairs the units of layer t with those of layer t+1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GridMatch {
    /// Both layers share a grid (consecutive conv layers, or fc6 and fc8 run densely: the
    /// paper's FC-FC): unit i of layer t meets unit i of layer t+1.
    Same,
    /// Layer t+1 lies on a coarser grid (a fully connected layer run densely over a conv
    /// layer: the paper's FC-Conv): its unit i meets the signed square root of the sum of
    /// layer t over i's receptive field.
    ReceptiveField,
}

/// The guide layer name of AConv pooling: the 1x1 convolution that `train-aconv` adds on top
/// of the local layer (fc6), run on it, supplies the pooling channels (`--layers fc6,aconv`).
pub const ADDED_GUIDE: &str = "aconv";

impl Representation {
    /// Whether the pooling channels come from the added layer ([`ADDED_GUIDE`]) run on the
    /// local layer, not from a layer of the network.
    pub fn added_guide(&self) -> bool {
        matches!(self, Representation::CrossLayer { guide, .. } if guide == ADDED_GUIDE)
    }

    /// The paper's default for `arch`: cross-layer pooling of its default layer pair, 1x1.
    pub fn paper_default(arch: Arch) -> Self {
        let (t, t1) = arch.default_pair();
        Representation::cross_layer(t, t1, LocalWindow::UNIT)
    }

    /// The paper's cross-layer pooling of `local` (t) with `guide` (t+1) on one grid, summed
    /// over the units, with a local `window`.
    pub fn cross_layer(local: &str, guide: &str, window: LocalWindow) -> Self {
        Representation::CrossLayer {
            local: local.into(),
            guide: guide.into(),
            window,
            channel: ChannelPooling::Sum,
            grid: GridMatch::Same,
        }
    }

    /// The layer whose local features are pooled.
    pub fn local_layer(&self) -> &str {
        match self {
            Representation::CrossLayer { local, .. }
            | Representation::Gram { local, .. }
            | Representation::Region { local, .. } => local,
        }
    }

    /// Local window on the local layer (1x1 for region pooling).
    pub fn window(&self) -> LocalWindow {
        match self {
            Representation::CrossLayer { window, .. } | Representation::Gram { window, .. } => {
                *window
            }
            Representation::Region { .. } => LocalWindow::UNIT,
        }
    }

    /// Layers the network must produce (the local layer alone when the added layer guides).
    pub fn layers(&self) -> Vec<&str> {
        match self {
            Representation::CrossLayer { local, .. } if self.added_guide() => vec![local],
            Representation::CrossLayer { local, guide, .. } => vec![local, guide],
            Representation::Gram { local, .. } | Representation::Region { local, .. } => {
                vec![local]
            }
        }
    }
}

/// As a user would write it: `cross-layer conv5_2 x conv5_3, 1x1`, `gram conv5_3, 3x3`,
/// `sum pooling of conv5_3, pyramid levels 0-2`.
impl std::fmt::Display for Representation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Representation::CrossLayer {
                local,
                guide,
                window,
                channel,
                grid,
            } => {
                match grid {
                    GridMatch::Same => write!(f, "cross-layer {local} x {guide}, {window}")?,
                    GridMatch::ReceptiveField => write!(
                        f,
                        "cross-layer {local} (sum-pooled within each receptive field, square-rooted) x {guide}"
                    )?,
                }
                match channel {
                    ChannelPooling::Sum => Ok(()),
                    ChannelPooling::Max => f.write_str(", max channel pooling"),
                }
            }
            Representation::Gram { local, window } => write!(f, "gram {local}, {window}"),
            Representation::Region {
                local,
                mode,
                levels,
            } => {
                let how = match mode {
                    RegionPoolMode::Sum => "sum",
                    RegionPoolMode::Max => "max",
                };
                match levels {
                    0 => write!(f, "{how} pooling of {local}"),
                    l => write!(f, "{how} pooling of {local}, pyramid levels 0-{l}"),
                }
            }
        }
    }
}

/// A representation and its normalisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureSpec {
    /// What to pool.
    pub repr: Representation,
    /// Normalisation, applied per image after pooling.
    pub norm: Normalization,
}

impl FeatureSpec {
    /// The deepest layer the representation reads: the network must run up to it.
    pub fn deepest_layer(&self, arch: Arch) -> Result<&str> {
        let mut deepest = (0, "");
        for l in self.repr.layers() {
            deepest = deepest.max((arch.layer_index(l)?, l));
        }
        Ok(deepest.1)
    }

    /// Checks the spec against `arch`'s layers (names exist; a cross-layer guide comes after
    /// the local layer).
    pub fn validate(&self, arch: Arch) -> Result<()> {
        let idx: Vec<usize> = self
            .repr
            .layers()
            .iter()
            .map(|l| arch.layer_index(l))
            .collect::<Result<_>>()?;
        if let [t, t1] = idx[..] {
            if t1 <= t {
                return Err(Error::Config(format!(
                    "the guidance layer must come after the local layer ({} then {})",
                    self.repr.layers()[0],
                    self.repr.layers()[1]
                )));
            }
        }
        if self.repr.added_guide()
            && matches!(
                self.repr,
                Representation::CrossLayer {
                    grid: GridMatch::ReceptiveField,
                    ..
                }
            )
        {
            return Err(Error::Config(
                "the added AConv layer runs on the local layer's own grid: use --pooling cross-layer with --layers fc6,aconv".into(),
            ));
        }
        if let Representation::CrossLayer {
            window,
            grid: GridMatch::ReceptiveField,
            ..
        } = &self.repr
        {
            if *window != LocalWindow::UNIT {
                return Err(Error::Config(format!(
                    "FC-Conv pooling sums layer t over each receptive field of layer t+1; a {window} window on top of that is not supported (use 1x1)"
                )));
            }
        }
        Ok(())
    }
}
