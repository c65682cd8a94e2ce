//! Host side of `shaders/region_pool.wgsl`: the sum / max pooling baselines.

use crate::error::{Error, Result};
use crate::gpu::dispatch::{record, Grid};
use crate::gpu::plan::{plan_image_chunks, BindingWindow};
use crate::gpu::tensor::{create_storage, GpuFeatures, GpuTensor};
use crate::gpu::{Binding, GpuBuffer, GpuContext, Kernel};
use crate::pooling::RegionPoolMode;

use crate::gpu::shaders::{shader, wgsl_uniform, Shader};

/// Sum / max pooling over regions (baselines, spatial pyramids).
pub const REGION_POOL: Shader = shader!("region_pool.wgsl");

/// Threads per workgroup.
pub const WORKGROUP: u32 = 256;

wgsl_uniform! {
    /// Uniform block of `region_pool.wgsl`.
    pub struct RegionParams in REGION_POOL, test region_params_layout_matches_wgsl {
        h, w, c, regions, base, count, mode, out_base,
    }
}

/// `RegionParams::mode` values (`mode` in the shader).
pub(super) const MODE_SUM: u32 = 0;
pub(super) const MODE_MAX: u32 = 1;
pub(super) const MODE_SUM_SQRT: u32 = 2;

/// Regions `(y0, y1, x0, x1)` of a map uploaded once, to pool over batch after batch.
pub struct GpuRegions {
    boxes: Vec<[u32; 4]>,
    buffer: GpuBuffer,
}

impl GpuRegions {
    /// Uploads `boxes`.
    pub fn upload(ctx: &GpuContext, boxes: &[[u32; 4]]) -> Result<Self> {
        let buffer = create_storage(ctx, std::mem::size_of_val(boxes) as u64, "regions")?;
        ctx.queue
            .write_buffer(&buffer, 0, bytemuck::cast_slice(boxes));
        Ok(GpuRegions {
            boxes: boxes.to_vec(),
            buffer,
        })
    }

    /// The regions.
    pub fn boxes(&self) -> &[[u32; 4]] {
        &self.boxes
    }
}

/// The compiled region-pooling pipeline.
pub struct RegionPoolKernel(Kernel);

impl RegionPoolKernel {
    /// Compiles the kernel.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        ctx.kernel(&REGION_POOL, "main").map(RegionPoolKernel)
    }

    /// Records `out[n][r][c] = sum or max of x over region r`; `out` is `n x regions x c`.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        gpu_regions: &GpuRegions,
        mode: RegionPoolMode,
        out: &GpuFeatures,
    ) -> Result<()> {
        let s = x.shape;
        let regions = gpu_regions.boxes().len();
        if (out.images, out.rows, out.cols) != (s.n, regions, s.c) {
            return Err(Error::shape(
                "region_pool",
                format!(
                    "output is {}x{}x{}, expected {}x{regions}x{}",
                    out.images, out.rows, out.cols, s.n, s.c
                ),
            ));
        }
        let mode = match mode {
            RegionPoolMode::Sum => MODE_SUM,
            RegionPoolMode::Max => MODE_MAX,
        };
        self.record_into(ctx, enc, x, gpu_regions, mode, &out.buffer)
    }

    /// Records FC-Conv pooling's local features: `out[n][y][x][c]` = the signed square root of
    /// the sum of `x` over region `y * out.w + x` (the receptive field in `x` of `out`'s unit).
    pub fn record_fields(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        fields: &GpuRegions,
        out: &GpuTensor,
    ) -> Result<()> {
        out.expect_f32("field pooling")?;
        let (s, o) = (x.shape, out.shape);
        if (o.n, o.h * o.w, o.c) != (s.n, fields.boxes().len(), s.c) {
            return Err(Error::shape(
                "field_pool",
                format!(
                    "output is {o}, expected {} images, {} units and {} channels",
                    s.n,
                    fields.boxes().len(),
                    s.c
                ),
            ));
        }
        self.record_into(ctx, enc, x, fields, MODE_SUM_SQRT, &out.buffer)
    }

    /// Records the kernel in `mode` over `x` into `out`, `n x regions x c` values.
    fn record_into(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        gpu_regions: &GpuRegions,
        mode: u32,
        out: &GpuBuffer,
    ) -> Result<()> {
        x.expect_f32("region pooling")?;
        let s = x.shape;
        let regions = gpu_regions.boxes();
        if let Some(r) = regions
            .iter()
            .find(|r| r[0] >= r[1] || r[2] >= r[3] || r[1] as usize > s.h || r[3] as usize > s.w)
        {
            return Err(Error::shape(
                "region_pool",
                format!("region {r:?} is empty or outside the {}x{} map", s.h, s.w),
            ));
        }
        let limits = ctx.band_limits(0);
        let in_len = (s.h * s.w * s.c) as u64;
        let out_len = (regions.len() * s.c) as u64;
        for (i0, count) in plan_image_chunks(
            "region_pool",
            s.n,
            &[in_len * 4, out_len * 4],
            limits,
            usize::MAX,
        )? {
            let iw = BindingWindow::new(i0 as u64 * in_len, count as u64 * in_len, limits.align);
            let ow = BindingWindow::new(i0 as u64 * out_len, count as u64 * out_len, limits.align);
            let n = count as u64 * out_len;
            let params = RegionParams {
                h: s.h as u32,
                w: s.w as u32,
                c: s.c as u32,
                regions: regions.len() as u32,
                base: iw.base,
                count: n as u32,
                mode,
                out_base: ow.base,
            };
            record(
                ctx,
                enc,
                &self.0,
                &params,
                &[
                    iw.bind(&x.buffer),
                    Binding::whole(&gpu_regions.buffer),
                    ow.bind(out),
                ],
                Grid::Threads(n, WORKGROUP),
            );
        }
        Ok(())
    }
}
