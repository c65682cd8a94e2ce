//! The on-disk formats, in one place: the settings an extraction ran with ([`settings`]),
//! the names and manifests of feature shards ([`shards`]) and their writer ([`writer`]), and
//! the class labels manifests record ([`labels`]). Every command that writes or reads
//! an output directory or an index goes through these, so a format change is made here once.

pub mod labels;
pub mod pca_file;
pub mod settings;
pub mod shards;
pub mod tensor_file;
pub mod trained;
pub mod weights_file;
pub mod writer;

pub use settings::ExtractSettings;
pub use shards::{FinishedShard, ManifestLine, Status};
