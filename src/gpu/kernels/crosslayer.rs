//! Host side of `shaders/crosslayer.wgsl`: sums of outer products between two layers.

use crate::error::{Error, Result};
use crate::gpu::dispatch::record;
use crate::gpu::plan::{plan_image_chunks, BindingWindow};
use crate::gpu::tensor::{GpuFeatures, GpuTensor};
use crate::gpu::{GpuContext, Kernel};
use crate::pooling::{ChannelPooling, CrossLayer, Guide, LocalWindow};

use crate::gpu::shaders::{shader, wgsl_uniform, Shader};

/// Cross-layer pooling: batched sums of outer products.
pub const CROSSLAYER: Shader = shader!("crosslayer.wgsl");

/// Output rows per workgroup tile.
pub const BM: u32 = 64;
/// Output columns per workgroup tile.
pub const BN: u32 = 64;
/// Units staged per step.
pub const BK: u32 = 16;
/// Threads per workgroup along x (`@workgroup_size(WG_X, WG_Y)` in the shader).
pub const WG_X: u32 = 16;
/// Threads per workgroup along y.
pub const WG_Y: u32 = 16;

wgsl_uniform! {
    /// Uniform block of `crosslayer.wgsl`.
    pub struct CrossParams in CROSSLAYER, test cross_params_layout_matches_wgsl {
        h, w, units, group_images, a_c, a_base, a_win_h, a_win_w, a_feat, x_c, x_base, x_win_h,
        x_win_w, x_feat, out_base, accumulate, channel_max, _pad0, _pad1, _pad2,
    }
}

/// The compiled cross-layer pipeline.
pub struct CrossLayerKernel(Kernel);

impl CrossLayerKernel {
    /// Compiles the kernel.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        ctx.kernel(&CROSSLAYER, "main").map(CrossLayerKernel)
    }

    /// Records `out[g] (+)=` the pooling `op` (see [`CrossLayer`]); with `accumulate` it adds
    /// to what `out` holds. `out` must have `images = n / G`, `rows` = the guide's feature
    /// length and `cols` = the local feature length.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        op: CrossLayer<'_, GpuTensor>,
        out: &GpuFeatures,
        accumulate: bool,
    ) -> Result<()> {
        let CrossLayer {
            guide,
            x,
            x_win,
            group: group_images,
            mode,
        } = op;
        if accumulate && mode == ChannelPooling::Max {
            return Err(Error::Config(
                "max channel pooling cannot accumulate into an earlier sum".into(),
            ));
        }
        x.expect_f32("cross-layer pooling")?;
        let xs = x.shape;
        let (a, a_win) = match guide {
            Guide::Layer(a, w) => (a, w),
            Guide::Ones => (x, LocalWindow::UNIT),
        };
        a.expect_f32("cross-layer pooling")?;
        let a_c = match guide {
            Guide::Layer(a, _) => a.shape.c,
            Guide::Ones => 0,
        };
        let a_feat = if a_c == 0 { 1 } else { a_win.feature_len(a_c) };
        let x_feat = x_win.feature_len(xs.c);
        if (a.shape.n, a.shape.h, a.shape.w) != (xs.n, xs.h, xs.w) {
            return Err(Error::shape(
                "cross_layer",
                format!("layers {} and {xs} have different grids", a.shape),
            ));
        }
        if group_images == 0 || !xs.n.is_multiple_of(group_images) {
            return Err(Error::shape(
                "cross_layer",
                format!("{} images do not split into groups of {group_images}", xs.n),
            ));
        }
        let groups = xs.n / group_images;
        if (out.images, out.rows, out.cols) != (groups, a_feat, x_feat) {
            return Err(Error::shape(
                "cross_layer",
                format!(
                    "output is {}x{}x{}, expected {groups}x{a_feat}x{x_feat}",
                    out.images, out.rows, out.cols
                ),
            ));
        }
        let limits = ctx.band_limits(0);
        let plane = (xs.h * xs.w) as u64;
        let per_group = [
            plane * a.shape.c as u64 * group_images as u64 * 4,
            plane * xs.c as u64 * group_images as u64 * 4,
            (a_feat * x_feat) as u64 * 4,
        ];
        let max_groups = ctx.max_workgroups() as usize;
        for (g0, count) in plan_image_chunks("cross_layer", groups, &per_group, limits, max_groups)?
        {
            let img0 = (g0 * group_images) as u64;
            let imgs = (count * group_images) as u64;
            let aw = BindingWindow::new(
                img0 * plane * a.shape.c as u64,
                imgs * plane * a.shape.c as u64,
                limits.align,
            );
            let xw = BindingWindow::new(
                img0 * plane * xs.c as u64,
                imgs * plane * xs.c as u64,
                limits.align,
            );
            let ow = BindingWindow::new(
                (g0 * a_feat * x_feat) as u64,
                (count * a_feat * x_feat) as u64,
                limits.align,
            );
            let params = CrossParams {
                h: xs.h as u32,
                w: xs.w as u32,
                units: (group_images as u64 * plane) as u32,
                group_images: group_images as u32,
                a_c: a_c as u32,
                a_base: aw.base,
                a_win_h: a_win.h as u32,
                a_win_w: a_win.w as u32,
                a_feat: a_feat as u32,
                x_c: xs.c as u32,
                x_base: xw.base,
                x_win_h: x_win.h as u32,
                x_win_w: x_win.w as u32,
                x_feat: x_feat as u32,
                out_base: ow.base,
                accumulate: accumulate as u32,
                channel_max: (mode == ChannelPooling::Max) as u32,
                _pad0: 0,
                _pad1: 0,
                _pad2: 0,
            };
            record(
                ctx,
                enc,
                &self.0,
                &params,
                &[aw.bind(&a.buffer), xw.bind(&x.buffer), ow.bind(&out.buffer)],
                (
                    (a_feat as u32).div_ceil(BM),
                    (x_feat as u32).div_ceil(BN),
                    count as u32,
                ),
            );
        }
        Ok(())
    }
}
