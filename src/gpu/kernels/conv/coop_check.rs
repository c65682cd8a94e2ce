//! The check a device's cooperative-matrix kernel must pass before any layer runs on it:
//! agreement with the scalar f16 kernel on an odd shape, within the bound both must meet
//! (wgpu issue 8805 is one driver bug it guards against).

use super::tile::ConvTile;
use super::weights::GpuConv2d;
use super::Conv2dKernel;
use crate::error::Result;
use crate::gpu::{Dtype, GpuContext, GpuTensor};
use crate::shape::Conv2dSpec;
use crate::weights::Conv2dWeights;

impl Conv2dKernel {
    /// Runs the cooperative-matrix kernel and the scalar f16 kernel on the same f16 data, on
    /// an odd shape (ragged tiles in M, N and K), and compares them within the bound both
    /// must meet: each is within `gamma_n * sum |w x|` of the exact sum of the same products,
    /// so they are within twice that of each other. `sum |w x|` comes from the scalar kernel
    /// on |x| and |w|. Ok(Err) when they disagree.
    pub(super) fn verify_cooperative(
        &self,
        ctx: &GpuContext,
    ) -> Result<std::result::Result<(), String>> {
        let spec = Conv2dSpec {
            in_c: 19,
            out_c: 70,
            window: crate::shape::Window2d::square(3, 1, 1),
            relu: false,
        };
        let shape = crate::shape::Shape4::new(2, 9, 11, spec.in_c);
        // Deterministic values in [-1, 1) (a 64-bit LCG), scaled as He initialisation would.
        let mut s = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let scale = (2.0 / spec.k_total() as f32).sqrt();
        let w: Vec<f32> = (0..spec.weight_len()).map(|_| next() * scale).collect();
        let x: Vec<f32> = (0..shape.len()).map(|_| next()).collect();
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        let zero_bias = vec![0.0; spec.out_c];
        let layer = |w: Vec<f32>| -> Result<GpuConv2d> {
            GpuConv2d::upload_as(
                ctx,
                &Conv2dWeights::new(spec, w, zero_bias.clone())?,
                Dtype::F16,
            )
        };
        let run = |tile: ConvTile, layer: &GpuConv2d, x: &[f32]| -> Result<Vec<f32>> {
            let input = GpuTensor::upload_as(ctx, x, shape, Dtype::F16, "coop check input")?;
            let out = GpuTensor::new(ctx, spec.output_shape(shape)?, "coop check output")?;
            ctx.submit("checking the cooperative-matrix kernel", |enc| {
                self.record_with(ctx, enc, Some(tile), layer, (&input, None, &out), None)
            })?;
            out.download(ctx)
        };
        let (signed, magnitude) = (layer(w.clone())?, layer(abs(&w))?);
        let coop = run(ConvTile::Coop, &signed, &x)?;
        let scalar = run(ConvTile::Small, &signed, &x)?;
        let mag = run(ConvTile::Small, &magnitude, &abs(&x))?;
        Ok(agree_within_sum_bound(&coop, &scalar, &mag, spec.k_total()))
    }
}

/// Whether `got` (one kernel's outputs) equals `other` (another's, from the same f16
/// products) within `2 gamma_n * magnitude` per element (`magnitude`: the sum of the absolute
/// products) plus an f32 ulp of each: the bound two f32 sums of the same n terms, in any
/// order, meet between themselves. The first element outside it, if any, in words.
pub fn agree_within_sum_bound(
    got: &[f32],
    other: &[f32],
    magnitude: &[f32],
    terms: usize,
) -> std::result::Result<(), String> {
    if got.len() != other.len() || got.len() != magnitude.len() {
        return Err(format!(
            "{} outputs against {} ({} magnitudes)",
            got.len(),
            other.len(),
            magnitude.len()
        ));
    }
    let u = f32::EPSILON as f64 / 2.0;
    let nu = terms as f64 * u;
    let gamma = nu / (1.0 - nu);
    for (i, ((&g, &o), &m)) in got.iter().zip(other).zip(magnitude).enumerate() {
        let tol = 2.0 * gamma * m as f64 + (g.abs().max(o.abs()) as f64) * f32::EPSILON as f64;
        let err = (g as f64 - o as f64).abs();
        // A NaN on either side is a disagreement.
        if err.is_nan() || err > tol {
            return Err(format!(
                "the cooperative-matrix kernel gave {g} where the scalar f16 kernel gave {o} (output {i}, bound {tol:e})"
            ));
        }
    }
    if other.iter().all(|&v| v == 0.0) {
        return Err("the scalar f16 kernel gave only zeros, so nothing was compared".into());
    }
    Ok(())
}
