//! Networks: their architecture, weight files and input preprocessing.

mod arch;
mod preprocess;
mod weights_file;

pub use arch::{Arch, Layer, LayerKind};
pub use preprocess::{ChannelOrder, Preprocess};
pub(crate) use weights_file::layers_to_load;
pub use weights_file::ModelWeights;
