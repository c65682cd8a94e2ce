//! Shared helpers for the GPU-versus-reference tests.
//!
//! GPU tests never skip: without an adapter they fail with the reason, in CI and locally alike.

#![allow(dead_code)] // each test binary uses a different subset

use crosspool::gpu::{GpuContext, GpuOptions};
use crosspool::reference::{f32_dot_error_bound, Reduced};
use std::path::PathBuf;
use std::sync::OnceLock;

/// A fresh directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An empty `TempDir` named after `name` and this test process.
pub fn temp_dir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("crosspool-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

fn env_options() -> GpuOptions {
    GpuOptions::from_env().unwrap_or_else(|e| panic!("{e}"))
}

fn open(opts: GpuOptions) -> GpuContext {
    match GpuContext::new(&opts) {
        Ok(ctx) => {
            eprintln!("GPU tests on: {}", ctx.describe());
            ctx
        }
        Err(e) => panic!("GPU tests need an adapter and none could be opened: {e}"),
    }
}

/// The default device, shared by the tests of one binary.
pub fn gpu() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| open(env_options()))
}

/// A device of its own, for tests that count what the context creates.
pub fn fresh_gpu() -> GpuContext {
    open(env_options())
}

/// A device whose bindings are capped at `cap` bytes, so that kernels must split their work.
pub fn gpu_with_binding_cap(cap: u64) -> GpuContext {
    let ctx = open(GpuOptions {
        max_binding_bytes: Some(cap),
        ..env_options()
    });
    assert_eq!(
        ctx.binding_cap(),
        cap,
        "adapter allows less than the cap the test asks for"
    );
    ctx
}

/// Deterministic values in [-1, 1) (SplitMix64), so failures reproduce.
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Asserts that `gpu` equals the reference within the f32 summation bound for `terms` products
/// per output, scaled by each output's magnitude, plus half an ulp for rounding the reference.
pub fn assert_reduction_close(gpu: &[f32], want: &Reduced, terms: usize, what: &str) {
    assert_eq!(gpu.len(), want.values.len(), "{what}: length");
    let gamma = f32_dot_error_bound(terms);
    let mut worst = (0.0f32, 0usize);
    for (i, (&g, (&r, &m))) in gpu
        .iter()
        .zip(want.values.iter().zip(&want.magnitude))
        .enumerate()
    {
        let tol = gamma * m + r.abs() * f32::EPSILON;
        let err = (g - r).abs();
        assert!(
            err <= tol,
            "{what}: element {i}: gpu {g} vs reference {r} (|err| {err:e} > tol {tol:e}, magnitude {m:e})"
        );
        if tol > 0.0 && err / tol > worst.0 {
            worst = (err / tol, i);
        }
    }
    assert!(
        gpu.iter().any(|&v| v != 0.0),
        "{what}: output is all zeros, so the test proves nothing"
    );
    eprintln!(
        "{what}: {} outputs, worst error {:.3} of the bound (element {})",
        gpu.len(),
        worst.0,
        worst.1
    );
}

/// One tensor for [`safetensors_bytes`]: name, dtype, shape, little-endian bytes.
pub type RawTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Serialises `tensors` (and optional metadata) to safetensors bytes.
pub fn safetensors_bytes(
    tensors: &[RawTensor],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, metadata).unwrap()
}

/// The conv layers of `arch` (and the fully connected ones if `classifier`) with the seeded
/// weights of tools/make_golden.py (weight j = random(1000 + 2j) * sqrt(2 / fan_in), bias j =
/// random(1001 + 2j) * 0.1), in torchvision's names and layouts, as f32 tensors.
pub fn seeded_tensors_with(arch: crosspool::model::Arch, classifier: bool) -> Vec<RawTensor> {
    use crosspool::model::LayerKind;
    let mut tensors = Vec::new();
    let mut j = 0u64;
    for layer in arch.layers() {
        let LayerKind::Conv {
            spec,
            tensor,
            from_linear,
        } = layer.kind
        else {
            continue;
        };
        if from_linear && !classifier {
            break;
        }
        let w = spec.window;
        let fan_in = spec.in_c * w.kh * w.kw;
        let scale = (2.0f64 / fan_in as f64).sqrt() as f32;
        let weight: Vec<f32> = random(spec.weight_len(), 1000 + 2 * j)
            .iter()
            .map(|v| v * scale)
            .collect();
        let bias: Vec<f32> = random(spec.out_c, 1001 + 2 * j)
            .iter()
            .map(|v| v * 0.1f32)
            .collect();
        let f32t = safetensors::Dtype::F32;
        tensors.push((
            format!("{tensor}.weight"),
            f32t,
            if from_linear {
                vec![spec.out_c, fan_in]
            } else {
                vec![spec.out_c, spec.in_c, w.kh, w.kw]
            },
            bytemuck::cast_slice(&weight).to_vec(),
        ));
        tensors.push((
            format!("{tensor}.bias"),
            f32t,
            vec![spec.out_c],
            bytemuck::cast_slice(&bias).to_vec(),
        ));
        j += 1;
    }
    tensors
}

/// The conv layers only: [`seeded_tensors_with`] without the classifier.
pub fn seeded_tensors(arch: crosspool::model::Arch) -> Vec<RawTensor> {
    seeded_tensors_with(arch, false)
}

/// [`seeded_tensors`] as a safetensors file.
pub fn seeded_weights_file(
    arch: crosspool::model::Arch,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    safetensors_bytes(&seeded_tensors(arch), metadata)
}

/// `‖a − b‖₂ / ‖b‖₂`, accumulated in f64.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// The seeded trunk weights of `arch` (no classifier), loaded.
pub fn seeded_weights(arch: crosspool::model::Arch) -> crosspool::model::ModelWeights {
    crosspool::model::ModelWeights::from_bytes(
        &seeded_weights_file(arch, None),
        std::path::Path::new("seeded"),
        Some(arch),
        None,
    )
    .unwrap()
}

/// Undo the signed square root, so that values near zero (where sqrt is not Lipschitz) do not
/// turn rounding differences into large ones; anything else wrong still shows.
pub fn unsqrt(v: &[f32], spec: &crosspool::features::FeatureSpec) -> Vec<f32> {
    if spec.norm.signed_sqrt {
        v.iter().map(|x| x * x.abs()).collect()
    } else {
        v.to_vec()
    }
}

/// A convolution's geometry: `in_c` to `out_c` channels over `window`, with or without ReLU.
pub fn conv(
    in_c: usize,
    out_c: usize,
    window: crosspool::shape::Window2d,
    relu: bool,
) -> crosspool::shape::Conv2dSpec {
    crosspool::shape::Conv2dSpec {
        in_c,
        out_c,
        window,
        relu,
    }
}
