//! Autotuning a convolution: the candidate tiles of a layer, timed by [`crate::tune`], which
//! keeps the fastest per device, layer shape, batch and storage types.

use super::tile::{ConvTile, BK, WHOLE_K_MAX};
use super::types::ConvTypes;
use super::weights::GpuConv2d;
use super::Conv2dKernel;
use crate::error::Result;
use crate::gpu::{Dtype, GpuContext, GpuTensor};

impl Conv2dKernel {
    /// The tile timing picks for `layer` on this input and output (see [`crate::tune`]):
    /// each candidate (the small, large and double-buffered large tiles, the whole-K one
    /// where K fits, splits of K around the size rule's where the small tile leaves the GPU
    /// half idle, and cooperative matrices for f16 weights where they passed their check)
    /// runs the whole layer once to warm up, then twice in one submission of enough
    /// repetitions to last some 5 ms, the faster repetition counting.
    pub(super) fn tuned_tile(
        &self,
        ctx: &GpuContext,
        cache: Option<&std::path::Path>,
        layer: &GpuConv2d,
        input: &GpuTensor,
        output: &GpuTensor,
    ) -> Result<ConvTile> {
        let types = ConvTypes {
            input: input.dtype,
            output: output.dtype,
            weights: layer.dtype,
        };
        let memo = (layer.spec, input.shape, types);
        if let Some(t) = self
            .tuned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&memo)
        {
            return Ok(*t);
        }
        let (s, w, i) = (layer.spec, layer.spec.window, &ctx.info);
        let key = format!(
            "{} ({:?}, {:04x}:{:04x}, {} {}) | in {}x{}x{}x{} {:?} | {}x{} s{}x{} p{}x{} -> {} | weights {:?}, out {:?}",
            i.name, i.backend, i.vendor, i.device, i.driver, i.driver_info,
            input.shape.n, input.shape.h, input.shape.w, input.shape.c, input.dtype,
            w.kh, w.kw, w.stride_h, w.stride_w, w.pad_h, w.pad_w, s.out_c,
            layer.dtype, output.dtype,
        );
        let name = crate::tune::choose(
            cache,
            &key,
            |n| ConvTile::from_name(n).is_some(),
            || {
                let mut candidates = vec![ConvTile::Small, ConvTile::Large, ConvTile::Large2];
                if s.k_total() <= WHOLE_K_MAX as usize {
                    candidates.push(ConvTile::Whole);
                }
                // Splits of K where the small tile leaves a GPU half idle (as the rule would).
                let m = (input.shape.n * output.shape.h * output.shape.w) as u64;
                let k = s.k_total() as u64;
                if let ConvTile::SplitK(by_rule) =
                    ConvTile::split_for_gemm(m, s.out_c as u64, k, self.min_large_workgroups)
                {
                    candidates.extend(
                        [by_rule / 2, by_rule, by_rule * 2]
                            .into_iter()
                            .filter(|&layers| layers >= 2 && k >= 4 * BK as u64 * layers as u64)
                            .map(ConvTile::SplitK),
                    );
                }
                if layer.dtype == Dtype::F16 && self.cooperative(ctx).is_ok() {
                    candidates.push(ConvTile::Coop);
                }
                let timed = crate::tune::time_candidates(candidates, 0.005, |&tile, reps| {
                    ctx.submit("autotuning a convolution", |enc| {
                        for _ in 0..reps {
                            self.record_with(
                                ctx,
                                enc,
                                Some(tile),
                                layer,
                                (input, None, output),
                                None,
                            )?;
                        }
                        Ok(())
                    })?;
                    ctx.wait("autotuning a convolution")
                })?;
                Ok(timed.into_iter().map(|(t, s)| (t.name(), s)).collect())
            },
        )?;
        // Accepted by the validity check above.
        let tile = ConvTile::from_name(&name).unwrap_or(ConvTile::Small);
        self.tuned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(memo, tile);
        Ok(tile)
    }
}
