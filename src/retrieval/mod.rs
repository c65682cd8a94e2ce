//! Image retrieval with cross-layer features (the paper's section 3.5): a database of
//! binarised (or float) features, the query-adaptive channel selection of eq. 3, scoring on
//! the GPU (`gpu::ScoreKernel`) with a CPU reference here, and mAP / recall@1 evaluation.

pub mod eval;
pub mod index;
pub mod query;
pub mod score;
pub mod search;

pub use index::{BuildStats, IndexData, RetrievalIndex, Storage};
