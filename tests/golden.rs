//! The GPU forward pass, the CPU backend's (with each convolution kernel this CPU runs) and
//! the CPU reference against activations computed by torchvision's own VGG16, VGG19
//! and AlexNet modules in float64 (tests/golden, written by tools/make_golden.py with seeded
//! weights that `common::seeded_weights_file` regenerates).

mod common;

use common::{gpu, random, rel_l2, safetensors_bytes, seeded_tensors_with};
use crosspool::cpu::{ConvKernel, CpuBackend, HostTensor, Products};
use crosspool::gpu::GpuTensor;
use crosspool::model::{Arch, ModelWeights};
use crosspool::pipeline::{GpuNetwork, Network};
use crosspool::reference;
use crosspool::shape::Shape4;
use safetensors::SafeTensors;
use std::path::Path;

/// Normwise relative error allowed against float64 torchvision, for the GPU and the CPU
/// backend alike (both accumulate in f32). Each f32 layer adds a
/// relative error of order √K·u (u = 2⁻²⁴, K ≤ 9216 terms: ≈ 6·10⁻⁶ at most, far less on
/// average), compounded over 8 to 19 layers. Measured: at most 1.8·10⁻⁶ (AlexNet fc6 on
/// lavapipe; the conv layers measured alike on an H100). 10⁻⁵ leaves room for other summation orders and fused fma, while a wrong index, a missed
/// channel or a transposed kernel gives errors of order 1.
const GPU_TOL: f64 = 1e-5;
/// bf16 products (`--precision bf16`): each layer's weights and inputs rounded to 8
/// significant bits (unit roundoff u = 2⁻⁸), so each product is off by up to 2u, by about
/// √(2/3)·u in the mean square for round to nearest; a layer's normwise error is that times
/// its cancellation ‖|W||x|‖ / ‖Wx‖ (a few for ReLU networks: say 4), and independent
/// layers' errors add in quadrature: for 19 layers √19 · 0.82u · 4 ≈ 0.056. 0.06 keeps a
/// wrong index, channel or transposed kernel (errors of order 1) failing.
const BF16_TOL: f64 = 0.06;
/// What the CPU backend's default kernel must keep on VGG16 (issue 32: the default Winograd
/// variant is the fastest whose normwise error stays at or below this). Not a derived bound
/// but the product's criterion, held here so that a faster, less accurate default fails it.
/// Measured: F(2x2) 3.1·10⁻⁷ at worst; on real weights see tests/real_weights.rs.
const DEFAULT_KERNEL_TOL: f64 = 1e-6;
/// The reference accumulates in f64 and rounds to f32 once per layer, as the golden file is
/// rounded once: errors of a few u (measured at most 5.3·10⁻⁸).
const REF_TOL: f64 = 2e-7;

/// The CPU backend's convolution kernels this CPU runs (see tests/cpu_conv.rs).
fn cpu_kernels() -> Vec<ConvKernel> {
    ConvKernel::available()
}

fn check(arch: Arch, file: &str) {
    check_upto(arch, file, None)
}

/// As `check`, loading layers up to `last` (the classifier too when it names an fc layer).
fn check_upto(arch: Arch, file: &str, last: Option<&str>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    let input_t = golden.tensor("input").unwrap();
    let s = input_t.shape();
    let shape = Shape4::new(s[0], s[1], s[2], s[3]);
    let input: Vec<f32> = bytemuck::pod_collect_to_vec(input_t.data());
    // The generators of make_golden.py and tests/common agree bit for bit, or nothing below could.
    assert_eq!(
        input,
        random(shape.len(), 7),
        "{file}: input differs from the seeded generator"
    );

    let names: Vec<String> = golden
        .names()
        .into_iter()
        .filter(|n| *n != "input")
        .map(String::from)
        .collect();
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let classifier = last.is_some_and(|l| l.starts_with("fc"));
    let weights_bytes = safetensors_bytes(&seeded_tensors_with(arch, classifier), None);
    let weights =
        ModelWeights::from_bytes(&weights_bytes, Path::new("seeded"), Some(arch), last).unwrap();

    let ctx = gpu();
    let net = GpuNetwork::new(ctx, &weights).unwrap();
    let ws = net.workspace(ctx, shape, &wanted).unwrap();
    let x = GpuTensor::upload(ctx, &input, shape, "input").unwrap();
    let outs = net.forward(ctx, &x, &ws).unwrap();
    let gpu_outs: Vec<(Shape4, Vec<f32>)> = outs
        .iter()
        .map(|t| (t.shape, t.download(ctx).unwrap()))
        .collect();
    let cpu = reference::network_forward(&weights, &input, shape, &wanted).unwrap();
    // Each backend with its bound: f32 kernels GPU_TOL; bf16 products (AMX), where this CPU
    // runs them, BF16_TOL.
    let mut backends = vec![("gpu".to_string(), gpu_outs, GPU_TOL)];
    let mut cpus: Vec<(String, CpuBackend, f64)> = cpu_kernels()
        .into_iter()
        .map(|k| {
            let default = k == ConvKernel::detected() && arch == Arch::Vgg16;
            (
                format!("cpu {}", k.name()),
                CpuBackend::with_conv_kernel(k),
                if default { DEFAULT_KERNEL_TOL } else { GPU_TOL },
            )
        })
        .collect();
    if Products::Bf16.is_available() {
        let bf16 = CpuBackend::new().with_products(Products::Bf16);
        cpus.push(("cpu bf16".to_string(), bf16, BF16_TOL));
    }
    for (label, backend, tol) in cpus {
        let net = Network::new(&backend, &weights).unwrap();
        let ws = net.workspace(&backend, shape, &wanted).unwrap();
        let x = HostTensor::from_values(input.clone(), shape).unwrap();
        let outs = net.forward(&backend, &x, &ws).unwrap();
        backends.push((
            label,
            outs.iter().map(|t| (t.shape, t.values())).collect(),
            tol,
        ));
    }

    for (i, (name, (cpu_shape, cpu_values))) in wanted.iter().zip(&cpu).enumerate() {
        let g = golden.tensor(name).unwrap();
        let gs = g.shape();
        let want_shape = Shape4::new(gs[0], gs[1], gs[2], gs[3]);
        let want: Vec<f32> = bytemuck::pod_collect_to_vec(g.data());
        assert_eq!(*cpu_shape, want_shape, "{file} {name}: reference shape");
        let e_ref = rel_l2(cpu_values, &want);
        eprintln!("{file} {name} {want_shape}: reference rel err {e_ref:.2e}");
        assert!(
            want.iter().any(|&v| v > 0.0),
            "{file} {name}: golden is all zero"
        );
        assert!(
            e_ref <= REF_TOL,
            "{file} {name}: reference vs torchvision {e_ref:e} > {REF_TOL:e}"
        );
        for (label, outs, tol) in &backends {
            let (got_shape, got) = &outs[i];
            assert_eq!(*got_shape, want_shape, "{file} {name}: {label} shape");
            let e = rel_l2(got, &want);
            eprintln!("{file} {name}: {label} rel err {e:.2e}");
            assert!(
                e <= *tol,
                "{file} {name}: {label} vs torchvision {e:e} > {tol:e}"
            );
        }
    }
}

#[test]
fn vgg16_matches_torchvision() {
    check(Arch::Vgg16, "vgg16_32.safetensors");
}

/// At 112 x 112 the CPU backend's default runs F(4x4) on conv2_2 and conv3 and F(2x2) on
/// conv4 and conv5.
#[test]
fn vgg16_at_112_matches_torchvision() {
    check(Arch::Vgg16, "vgg16_112.safetensors");
}

#[test]
fn vgg19_matches_torchvision() {
    check(Arch::Vgg19, "vgg19_32.safetensors");
}

#[test]
fn alexnet_matches_torchvision() {
    check(Arch::Alexnet, "alexnet_67.safetensors");
}

/// The classifier, run as convolutions, against torchvision's `Linear` layers at the native
/// input size. fc6's 151 MB of weights exceed lavapipe's 128 MiB binding and are split.
#[test]
fn alexnet_classifier_matches_torchvision() {
    check_upto(Arch::Alexnet, "alexnet_224.safetensors", Some("fc8"));
}

/// ResNet-50 (batch norm folded on load, residual additions in the convolutions' epilogue)
/// at every block output, the stem, its padded pool and inner layers of each kind.
#[test]
fn resnet50_matches_torchvision() {
    check(Arch::Resnet50, "resnet50_40.safetensors");
}

/// ResNet-101's 23-block third stage and its fourth.
#[test]
fn resnet101_matches_torchvision() {
    check(Arch::Resnet101, "resnet101_32.safetensors");
}
