//! Whole VGG16 and ResNet-50 forward passes with seeded weights, from the image to the
//! cross-layer features of their default pairs, on the GPU against the native CPU backend: in
//! f32, and in f16 storage (on cooperative matrices where the device uses them) where the
//! adapter has shader-f16.

use super::{Emit, Options, Row};
use crate::cpu::{CpuBackend, HostTensor};
use crate::features::{FeatureSpec, Representation};
use crate::gpu::{Dtype, GpuContext, GpuTensor};
use crate::model::{Arch, ModelWeights};
use crate::pipeline::{Extractor, Storage};
use crate::pooling::Normalization;
use crate::reference::compare::{cosine_per_image, seeded_values, within_rel_l2};
use crate::shape::Shape4;
use crate::Result;

/// Normwise error of each backend's features against the reference that the tests hold both
/// to (tests/features.rs, tests/cpu_backend.rs: the forward pass differs from the reference by
/// at most ~2e-6, pooling adds short sums). Each within it of the reference puts the two
/// within twice it of each other.
const BACKEND_TOL: f64 = 1e-5;

/// The cosine per image f16 storage must keep to f32 features: the fidelity target of
/// `--precision f16` (real weights measured 1 - 3.3e-7 on lavapipe, tests/precision.rs).
const F16_MIN_COSINE: f64 = 0.9999;

/// Undoes the signed square root, so that values near zero (where the square root is not
/// Lipschitz) do not turn rounding differences into large ones; anything else wrong still
/// shows (as in the tests).
fn unsqrt(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x * x.abs()).collect()
}

pub(super) fn check(ctx: &GpuContext, opts: Options, emit: &mut Emit) {
    for arch in [Arch::Vgg16, Arch::Resnet50] {
        check_arch(ctx, arch, opts, emit);
    }
}

fn check_arch(ctx: &GpuContext, arch: Arch, opts: Options, emit: &mut Emit) {
    let size = if opts.quick { 64 } else { 224 };
    let shape = Shape4::new(2, size, size, 3);
    let what = format!("{arch} 2x{size}x{size} seeded");
    let spec = FeatureSpec {
        repr: Representation::paper_default(arch),
        norm: Normalization::PAPER,
    };
    // Roughly the range of preprocessed pixels.
    let x: Vec<f32> = seeded_values(shape.len(), 99)
        .iter()
        .map(|v| v * 2.0)
        .collect();
    let t0 = std::time::Instant::now();
    let prepared = (|| -> Result<(ModelWeights, Vec<f32>)> {
        let (_, t1) = arch.default_pair();
        let w = ModelWeights::synthetic(arch, Some(t1))?;
        let cpu = CpuBackend::new();
        let ex = Extractor::new(&cpu, &w, spec.clone(), None)?;
        let ws = ex.workspace(&cpu, shape)?;
        let t = HostTensor::from_values(x.clone(), shape)?;
        let want = cpu.download(ex.extract(&cpu, &t, &ws)?)?;
        Ok((w, want))
    })();
    let (w, want) = match prepared {
        Ok(p) => p,
        Err(e) => {
            emit(Row::of(
                ("features (network)", &what, "f32"),
                t0,
                Err(crate::Error::Config(format!(
                    "the CPU backend's features: {e}"
                ))),
            ));
            return;
        }
    };
    let gpu = |storage: Dtype| -> Result<Vec<f32>> {
        let ex = Extractor::with_storage(ctx, &w, spec.clone(), None, storage)?;
        let ws = ex.workspace(ctx, shape)?;
        let gx = GpuTensor::upload(ctx, &x, shape, "selftest image")?;
        let got = ex.extract(ctx, &gx, &ws)?.download(ctx)?;
        if let Some(i) = ws.overflowed(ctx)?.iter().position(|&o| o) {
            return Err(crate::Error::Config(format!(
                "image {i} overflowed f16 storage"
            )));
        }
        Ok(got)
    };
    let t0 = std::time::Instant::now();
    let f32_outcome =
        gpu(Dtype::F32).map(|got| within_rel_l2(&unsqrt(&got), &unsqrt(&want), 2.0 * BACKEND_TOL));
    emit(Row::of(
        ("features (network)", &format!("{what} vs cpu"), "f32"),
        t0,
        f32_outcome,
    ));
    if !ctx.has_f16() {
        emit(Row::unavailable(
            "features (network)",
            "f16",
            "the adapter lacks shader-f16",
        ));
        return;
    }
    let t0 = std::time::Instant::now();
    let outcome = gpu(Dtype::F16).map(|got| cosine_per_image(&got, &want, shape.n, F16_MIN_COSINE));
    emit(Row::of(
        ("features (network)", &format!("{what} cosine"), "f16"),
        t0,
        outcome,
    ));
}
