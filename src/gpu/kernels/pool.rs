//! Host side of `shaders/maxpool2d.wgsl`.

use crate::error::Result;
use crate::gpu::dispatch::{record, Grid};
use crate::gpu::plan::plan_row_bands;
use crate::gpu::tensor::{Dtype, GpuTensor};
use crate::gpu::{GpuContext, Kernel};
use crate::shape::{MaxPool2dSpec, Shape4};

use crate::gpu::shaders::{shader, wgsl_uniform, Shader};

/// Max pooling.
pub const MAXPOOL2D: Shader = shader!("maxpool2d.wgsl");

/// Threads per workgroup in `maxpool2d.wgsl`.
pub const WORKGROUP: u32 = 256;

wgsl_uniform! {
    /// Uniform block of `maxpool2d.wgsl`.
    pub struct PoolParams in MAXPOOL2D, test pool_params_layout_matches_wgsl {
        in_h, in_w, c, in_base, out_h, out_w, out_base, out_row0, kh, kw, stride_h, stride_w,
        pad_h, pad_w, in_row0, count,
    }
}

/// Max pooling on a device: its pipelines, by (input, output) storage type, live in the
/// device's pipeline cache; the f32 one is compiled at once, the others on first use.
pub struct MaxPool2dKernel(());

impl MaxPool2dKernel {
    /// Compiles the f32 kernel.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let k = MaxPool2dKernel(());
        k.kernel(ctx, Dtype::F32, Dtype::F32)?;
        Ok(k)
    }

    fn kernel(&self, ctx: &GpuContext, input: Dtype, output: Dtype) -> Result<Kernel> {
        let (i, o) = (
            format!("alias in_t = {};", input.wgsl()),
            format!("alias out_t = {};", output.wgsl()),
        );
        let shader =
            MAXPOOL2D.specialise(&[("alias in_t = f32;", &i), ("alias out_t = f32;", &o)])?;
        ctx.kernel(&shader, "main")
    }

    /// Records `output = max_pool(input)`, split into bands that fit the binding limit.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        spec: MaxPool2dSpec,
        input: &GpuTensor,
        output: &GpuTensor,
    ) -> Result<()> {
        let out = spec.output_shape(input.shape)?;
        Shape4::check_output("max_pool2d", out, output.shape)?;
        if out.is_empty() {
            return Ok(());
        }
        let limits = ctx.band_limits(usize::MAX);
        let w = spec.window;
        let in_row = (input.shape.w * input.shape.c) as u64;
        let out_row = (out.w * out.c) as u64;
        let kernel = self.kernel(ctx, input.dtype, output.dtype)?;
        for band in plan_row_bands("max_pool2d", input.shape, out, &w, limits)? {
            let (iw, ow) = band.windows(
                (in_row, out_row),
                (input.dtype.bytes(), output.dtype.bytes()),
                limits.align,
            );
            let count = band.out_rows as u64 * out_row;
            let params = PoolParams {
                in_h: input.shape.h as u32,
                in_w: input.shape.w as u32,
                c: out.c as u32,
                in_base: iw.base,
                out_h: out.h as u32,
                out_w: out.w as u32,
                out_base: ow.base,
                out_row0: band.out_row0 as u32,
                kh: w.kh as u32,
                kw: w.kw as u32,
                stride_h: w.stride_h as u32,
                stride_w: w.stride_w as u32,
                pad_h: w.pad_h as u32,
                pad_w: w.pad_w as u32,
                in_row0: band.in_row0 as u32,
                count: count as u32,
            };
            record(
                ctx,
                enc,
                &kernel,
                &params,
                &[iw.bind(&input.buffer), ow.bind(&output.buffer)],
                Grid::Threads(count, WORKGROUP),
            );
        }
        Ok(())
    }

    /// Allocates the output, pools and submits.
    pub fn run(
        &self,
        ctx: &GpuContext,
        spec: MaxPool2dSpec,
        input: &GpuTensor,
    ) -> Result<GpuTensor> {
        let output = GpuTensor::new(ctx, spec.output_shape(input.shape)?, "pool output")?;
        ctx.submit("max_pool2d", |enc| {
            self.record(ctx, enc, spec, input, &output)
        })?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::shaders::tests::assert_valid_spirv;

    #[test]
    fn every_storage_variant_translates_to_valid_spirv() {
        for i in [Dtype::F32, Dtype::F16] {
            for o in [Dtype::F32, Dtype::F16] {
                let (a, b) = (
                    format!("alias in_t = {};", i.wgsl()),
                    format!("alias out_t = {};", o.wgsl()),
                );
                let v = MAXPOOL2D
                    .specialise(&[("alias in_t = f32;", &a), ("alias out_t = f32;", &b)])
                    .unwrap();
                assert_valid_spirv(&v);
            }
        }
    }
}
