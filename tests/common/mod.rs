//! Shared helpers for the GPU-versus-reference tests.
//!
//! GPU tests never skip: without an adapter they fail with the reason, in CI and locally alike.

#![allow(dead_code)] // each test binary uses a different subset

use crosspool::gpu::{GpuContext, GpuOptions};
use crosspool::reference::{compare, Reduced};
use std::path::PathBuf;
use std::sync::OnceLock;

/// `p` in the repository.
pub fn repo(p: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Runs the `crosspool` binary with `args`; fails the test, with its stderr, unless it
/// succeeds.
pub fn run_ok(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "crosspool {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

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

/// Deterministic values in [-1, 1) (SplitMix64), so failures reproduce: the library's, which
/// `crosspool selftest` uses too.
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    compare::seeded_values(len, seed)
}

/// Asserts that `gpu` equals the reference within the f32 summation bound for `terms` products
/// per output, scaled by each output's magnitude, plus half an ulp for rounding the reference
/// ([`compare::within_sum_bound`], the bound `crosspool selftest` holds kernels to).
pub fn assert_reduction_close(gpu: &[f32], want: &Reduced, terms: usize, what: &str) {
    let a = compare::within_sum_bound(
        gpu,
        want,
        terms,
        compare::Rounding::F32,
        compare::Accumulation::Nearest,
    );
    if let Some(why) = &a.failure {
        panic!("{what}: {why}");
    }
    eprintln!(
        "{what}: {} outputs, worst error {:.3} of the bound (element {})",
        gpu.len(),
        a.worst,
        a.at
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
            batch_norm,
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
        match batch_norm {
            None => tensors.push((
                format!("{tensor}.bias"),
                f32t,
                vec![spec.out_c],
                bytemuck::cast_slice(&bias).to_vec(),
            )),
            Some(bn) => tensors.extend(seeded_batch_norm(&bn, spec.out_c, j)),
        }
        j += 1;
    }
    tensors
}

/// The batch norm after conv layer `j` (ResNet's), as tools/make_golden.py seeds it: weight
/// 0.5 + 0.25 random(3000 + 4j), bias 0.1 random(3001 + 4j), running mean 0.1 random(3002 +
/// 4j), running variance 1 + 0.5 random(3003 + 4j): branches that shrink what they add, so
/// that activations stay of order one through 33 residual blocks.
fn seeded_batch_norm(bn: &str, c: usize, j: u64) -> Vec<RawTensor> {
    let at = |k: u64, scale: f32, offset: f32| -> Vec<u8> {
        let v: Vec<f32> = random(c, 3000 + 4 * j + k)
            .iter()
            .map(|r| offset + scale * r)
            .collect();
        bytemuck::cast_slice(&v).to_vec()
    };
    let f32t = safetensors::Dtype::F32;
    vec![
        (format!("{bn}.weight"), f32t, vec![c], at(0, 0.25, 0.5)),
        (format!("{bn}.bias"), f32t, vec![c], at(1, 0.1, 0.0)),
        (format!("{bn}.running_mean"), f32t, vec![c], at(2, 0.1, 0.0)),
        (format!("{bn}.running_var"), f32t, vec![c], at(3, 0.5, 1.0)),
    ]
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
    compare::rel_l2(a, b)
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
