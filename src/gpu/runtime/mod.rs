//! The GPU runtime: everything but the kernels. One concern per file: the device
//! (`context`, with its report in `info`), error scopes (`checked`), buffers (`buffer`),
//! the pipeline and bind-group caches (`cache`), recording and submitting dispatches
//! (`dispatch`), tensors (`tensor`), the band planner (`plan`) and the WGSL sources
//! (`shaders`).

pub(crate) mod buffer;
pub(crate) mod cache;
pub(crate) mod checked;
pub(crate) mod context;
pub(crate) mod dispatch;
mod info;
pub mod plan;
pub mod shaders;
pub(crate) mod tensor;
