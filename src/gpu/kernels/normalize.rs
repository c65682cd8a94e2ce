//! Host side of `shaders/normalize.wgsl`.

use crate::error::Result;
use crate::gpu::dispatch::record;
use crate::gpu::plan::{plan_image_chunks, BindingWindow};
use crate::gpu::tensor::{GpuFeatures, Scratch};
use crate::gpu::{GpuContext, Kernel};
use crate::pooling::Normalization;

use crate::gpu::shaders::{shader, wgsl_uniform, Shader};

/// Channel L2, signed square root, global L2.
pub const NORMALIZE: Shader = shader!("normalize.wgsl");

/// Threads per workgroup.
pub const WORKGROUP: u32 = 256;
/// Values each workgroup of the global pass scales.
const GLOBAL_CHUNK: u32 = WORKGROUP * 4;

wgsl_uniform! {
    /// Uniform block of `normalize.wgsl`.
    pub struct NormParams in NORMALIZE, test norm_params_layout_matches_wgsl {
        rows, cols, base, flags,
    }
}

/// The compiled normalisation pipelines (row pass and global pass).
pub struct NormalizeKernel {
    rows: Kernel,
    global: Kernel,
    row_norms: Scratch,
}

impl NormalizeKernel {
    /// Compiles both entry points.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(NormalizeKernel {
            rows: ctx.kernel(&NORMALIZE, "rows")?,
            global: ctx.kernel(&NORMALIZE, "global")?,
            row_norms: Scratch::new("row norms"),
        })
    }

    /// Records the normalisation of every image of `f` in place.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        f: &GpuFeatures,
        norm: Normalization,
    ) -> Result<()> {
        if norm == Normalization::NONE || f.images == 0 {
            return Ok(());
        }
        let limits = ctx.band_limits(0);
        let per_image = [f.len_per_image() as u64 * 4, f.rows as u64 * 4];
        let chunks = plan_image_chunks(
            "normalize",
            f.images,
            &per_image,
            limits,
            ctx.max_workgroups() as usize,
        )?;
        let max_chunk = chunks.iter().map(|c| c.1).max().unwrap_or(1);
        let row_sq = self
            .row_norms
            .at_least(ctx, (max_chunk * f.rows) as u64 * 4)?;
        let row_sq_win = BindingWindow {
            offset: 0,
            size: (max_chunk * f.rows) as u64 * 4,
            base: 0,
        };
        for (i0, count) in chunks {
            let len = f.len_per_image() as u64;
            let dw = BindingWindow::new(i0 as u64 * len, count as u64 * len, limits.align);
            let params = NormParams {
                rows: f.rows as u32,
                cols: f.cols as u32,
                base: dw.base,
                flags: norm.flags(),
            };
            let bindings = [dw.bind(&f.buffer), row_sq_win.bind(&row_sq)];
            record(
                ctx,
                enc,
                &self.rows,
                &params,
                &bindings,
                (f.rows as u32, count as u32, 1),
            );
            if norm.global_l2 {
                let groups = (len as u32).div_ceil(GLOBAL_CHUNK);
                record(
                    ctx,
                    enc,
                    &self.global,
                    &params,
                    &bindings,
                    (groups, count as u32, 1),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::shaders::tests::wgsl_u32_const;

    #[test]
    fn flags_match_wgsl() {
        assert_eq!(wgsl_u32_const(&NORMALIZE, "WORKGROUP"), WORKGROUP);
        let only = |c, s, g| {
            Normalization {
                channel_l2: c,
                signed_sqrt: s,
                global_l2: g,
            }
            .flags()
        };
        assert_eq!(
            wgsl_u32_const(&NORMALIZE, "ROW_L2"),
            only(true, false, false)
        );
        assert_eq!(
            wgsl_u32_const(&NORMALIZE, "SIGNED_SQRT"),
            only(false, true, false)
        );
    }
}
