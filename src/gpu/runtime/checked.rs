//! Turning wgpu's asynchronous validation and out-of-memory errors into `Result`s.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;

impl GpuContext {
    /// Runs `f`, capturing any validation or out-of-memory error it raises on the device
    /// (which wgpu would otherwise report by panicking) as an error naming `during`.
    pub fn checked<T>(&self, during: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(oom.pop()),
        ];
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(Error::Gpu {
                during: during.to_string(),
                message: e.to_string(),
            });
        }
        out
    }
}
