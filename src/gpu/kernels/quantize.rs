//! Host side of `shaders/quantize.wgsl`.

use crate::error::Result;
use crate::gpu::dispatch::{record, Grid};
use crate::gpu::plan::{plan_image_chunks, BindingWindow};
use crate::gpu::tensor::{GpuFeatures, GpuPacked};
use crate::gpu::{GpuContext, Kernel};
use crate::pooling::Quantization;

use crate::gpu::shaders::{shader, wgsl_uniform, Shader};

/// Sign quantisation and binarisation, bit-packed.
pub const QUANTIZE: Shader = shader!("quantize.wgsl");

/// Threads per workgroup.
pub const WORKGROUP: u32 = 256;

wgsl_uniform! {
    /// Uniform block of `quantize.wgsl`.
    pub struct QuantParams in QUANTIZE, test quant_params_layout_matches_wgsl {
        rows, cols, words_per_row, base, out_base, words, _pad0, _pad1,
    }
}

/// The compiled quantisation pipelines.
pub struct QuantizeKernel {
    sign2: Kernel,
    bits1: Kernel,
}

impl QuantizeKernel {
    /// Compiles both entry points.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(QuantizeKernel {
            sign2: ctx.kernel(&QUANTIZE, "sign2")?,
            bits1: ctx.kernel(&QUANTIZE, "bits1")?,
        })
    }

    /// The packed output for `f` under `q`.
    pub fn output(&self, ctx: &GpuContext, f: &GpuFeatures, q: Quantization) -> Result<GpuPacked> {
        GpuPacked::for_features(ctx, f, q, "packed features")
    }

    /// Records the packing of `f` into `out` (from [`QuantizeKernel::output`] or [`GpuPacked::for_features`]).
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        f: &GpuFeatures,
        q: Quantization,
        out: &GpuPacked,
    ) -> Result<()> {
        let wpr = q.words_per_row(f.cols);
        assert_eq!(
            (out.images, out.rows, out.words_per_row),
            (f.images, f.rows, wpr),
            "output from QuantizeKernel::output"
        );
        let limits = ctx.band_limits(0);
        let len = f.len_per_image() as u64;
        let words = (f.rows * wpr) as u64;
        let pipeline = match q {
            Quantization::Sign2 => &self.sign2,
            Quantization::Bits1 => &self.bits1,
        };
        for (i0, count) in plan_image_chunks(
            "quantize",
            f.images,
            &[len * 4, words * 4],
            limits,
            usize::MAX,
        )? {
            let dw = BindingWindow::new(i0 as u64 * len, count as u64 * len, limits.align);
            let ow = BindingWindow::new(i0 as u64 * words, count as u64 * words, limits.align);
            let n = count as u64 * words;
            let params = QuantParams {
                rows: f.rows as u32,
                cols: f.cols as u32,
                words_per_row: wpr as u32,
                base: dw.base,
                out_base: ow.base,
                words: n as u32,
                _pad0: 0,
                _pad1: 0,
            };
            record(
                ctx,
                enc,
                pipeline,
                &params,
                &[dw.bind(&f.buffer), ow.bind(&out.buffer)],
                Grid::Threads(n, WORKGROUP),
            );
        }
        Ok(())
    }
}
