//! Host side of `shaders/relu.wgsl`.

use crate::error::Result;
use crate::gpu::dispatch::{record, Grid};
use crate::gpu::plan::{plan_chunks, BindingWindow};
use crate::gpu::tensor::GpuTensor;
use crate::gpu::{GpuContext, Kernel};

use crate::gpu::shaders::{shader, wgsl_uniform, Shader};

/// In-place ReLU.
pub const RELU: Shader = shader!("relu.wgsl");

/// Threads per workgroup in `relu.wgsl`.
pub const WORKGROUP: u32 = 256;

wgsl_uniform! {
    /// Uniform block of `relu.wgsl`.
    pub struct ReluParams in RELU, test relu_params_layout_matches_wgsl {
        base, count, _pad0, _pad1,
    }
}

/// The compiled in-place ReLU pipeline.
pub struct ReluKernel(Kernel);

impl ReluKernel {
    /// Compiles the kernel.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        ctx.kernel(&RELU, "main").map(ReluKernel)
    }

    /// Records `t = max(t, 0)` in place, in chunks that fit the binding limit.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        t: &GpuTensor,
    ) -> Result<()> {
        t.expect_f32("relu")?;
        let limits = ctx.band_limits(usize::MAX);
        for (start, len) in plan_chunks(t.shape.len() as u64, limits, u32::MAX as u64) {
            let win = BindingWindow::new(start, len, limits.align);
            let params = ReluParams {
                base: win.base,
                count: len as u32,
                _pad0: 0,
                _pad1: 0,
            };
            record(
                ctx,
                enc,
                &self.0,
                &params,
                &[win.bind(&t.buffer)],
                Grid::Threads(len, WORKGROUP),
            );
        }
        Ok(())
    }

    /// Applies ReLU in place and submits.
    pub fn run(&self, ctx: &GpuContext, t: &GpuTensor) -> Result<()> {
        ctx.submit("relu", |enc| self.record(ctx, enc, t))
    }
}
