//! The paper's remaining pooling variants end to end (section 4.3, Table 5): FC-FC (fc6 with
//! a PCA x fc8 on the dense grid), FC-Conv (conv5 summed within fc6's receptive fields x fc6)
//! max channel pooling and AConv pooling (fc6 x an added 1x1 layer), on AlexNet with seeded weights including the classifier, at
//! 287x287 where the fully connected layers run densely over a 3x3 grid. The GPU and the CPU
//! backend are held to the CPU reference, and all three to an independent float64 computation
//! from the paper's definitions (tests/golden/variants_alexnet_287.safetensors, written by
//! tools/make_variant_golden.py with torchvision's AlexNet and numpy).

mod common;

use common::{gpu, random, rel_l2, safetensors_bytes, seeded_tensors_with, unsqrt};
use crosspool::cpu::CpuBackend;
use crosspool::features::{FeatureSpec, GridMatch, Representation};
use crosspool::model::{Arch, ModelWeights};
use crosspool::pca::Pca;
use crosspool::pipeline::{Backend, Extractor};
use crosspool::pooling::{ChannelPooling, LocalWindow, Normalization};
use crosspool::reference;
use crosspool::shape::Shape4;
use crosspool::weights::Conv2dWeights;
use safetensors::SafeTensors;
use std::path::Path;

const SIZE: usize = 287;
const BATCH: usize = 2;
const PCA_DIMS: usize = 64;

/// Normwise error allowed against the reference and against float64 torchvision: the forward
/// pass is within 1.8e-6 of torchvision (tests/golden.rs) and each pooled value is a sum of at
/// most 9 terms or a maximum (exact), so the bound of tests/features.rs holds.
const TOL: f64 = 1e-5;

fn weights() -> ModelWeights {
    let bytes = safetensors_bytes(&seeded_tensors_with(Arch::Alexnet, true), None);
    ModelWeights::from_bytes(
        &bytes,
        Path::new("seeded"),
        Some(Arch::Alexnet),
        Some("fc8"),
    )
    .unwrap()
}

/// A seeded projection of fc6 standing in for a fitted PCA (the golden file's generator
/// builds the same): mean |random(61)| / 100, components |random(62)| / 64. Non-negative
/// components and a small mean project the non-negative fc6 activations without
/// cancellation, so [`TOL`] applies; a centred PCA's conditioning is tested with the PCA
/// itself (tests/features.rs).
fn seeded_pca() -> Pca {
    let feat = 4096;
    Pca {
        arch: "alexnet".into(),
        layer: "fc6".into(),
        window: LocalWindow::UNIT,
        channels: feat,
        mean: random(feat, 61).iter().map(|v| v.abs() / 100.0).collect(),
        components: random(PCA_DIMS * feat, 62)
            .iter()
            .map(|v| v.abs() / 64.0)
            .collect(),
        eigenvalues: vec![0.0; feat],
        dims: PCA_DIMS,
        units: 0,
    }
}

/// The three variants: golden name, spec, PCA.
fn variants() -> Vec<(&'static str, FeatureSpec, Option<Pca>)> {
    let spec = |local: &str, guide: &str, channel, grid, norm| FeatureSpec {
        repr: Representation::CrossLayer {
            local: local.into(),
            guide: guide.into(),
            window: LocalWindow::UNIT,
            channel,
            grid,
        },
        norm,
    };
    let (sum, max) = (ChannelPooling::Sum, ChannelPooling::Max);
    let (paper, same) = (Normalization::PAPER, GridMatch::Same);
    vec![
        // Raw: fc8 has no ReLU, and a row whose guide nearly cancels is known only to f32's
        // absolute accuracy, which L2 per row would magnify to the size of the others.
        (
            "fc_fc",
            spec("fc6", "fc8", sum, same, Normalization::NONE),
            Some(seeded_pca()),
        ),
        (
            "fc_conv",
            spec("conv5", "fc6", sum, GridMatch::ReceptiveField, paper),
            None,
        ),
        (
            "max_conv4_conv5",
            spec("conv4", "conv5", max, same, paper),
            None,
        ),
    ]
}

fn input() -> (Vec<f32>, Shape4) {
    let shape = Shape4::new(BATCH, SIZE, SIZE, 3);
    (random(shape.len(), 7), shape)
}

/// Features of the seeded input on backend `b`: `(rows, cols, values)`.
fn extract_on<B: Backend>(
    b: &B,
    w: &ModelWeights,
    spec: &FeatureSpec,
    pca: Option<&Pca>,
) -> (usize, usize, Vec<f32>) {
    let (x, shape) = input();
    extract_with(b, w, spec, pca, None, &x, shape)
}

/// Features of input `x` on backend `b`, with an added AConv layer if given: `(rows, cols,
/// values)`.
fn extract_with<B: Backend>(
    b: &B,
    w: &ModelWeights,
    spec: &FeatureSpec,
    pca: Option<&Pca>,
    aconv: Option<&Conv2dWeights>,
    x: &[f32],
    shape: Shape4,
) -> (usize, usize, Vec<f32>) {
    let mut ex = Extractor::new(b, w, spec.clone(), pca).unwrap();
    if let Some(c) = aconv {
        ex = ex.with_aconv(b, c).unwrap();
    }
    let ws = ex.workspace(b, shape).unwrap();
    let t = b.tensor(shape, "input").unwrap();
    b.write(&t, x).unwrap();
    let f = ex.extract(b, &t, &ws).unwrap();
    let (_, rows, cols) = B::dims_of(f);
    (rows, cols, b.download(f).unwrap())
}

/// The golden rows of variant `name`: `(row stride, rows of the full feature, values)`.
fn golden(name: &str) -> (usize, usize, Vec<f32>) {
    golden_in("variants_alexnet_287.safetensors", name)
}

/// As [`golden`], from the golden file `file`.
fn golden_in(file: &str, name: &str) -> (usize, usize, Vec<f32>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let number = |k: String| meta[&k].parse::<usize>().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let values = bytemuck::pod_collect_to_vec(st.tensor(name).unwrap().data());
    (
        number(format!("{name}.row_stride")),
        number(format!("{name}.rows")),
        values,
    )
}

/// Every `stride`-th row of each image's `[rows][cols]` feature.
fn strided_rows(v: &[f32], rows: usize, cols: usize, stride: usize) -> Vec<f32> {
    v.chunks(rows * cols)
        .flat_map(|img| img.chunks(cols).step_by(stride).flatten().copied())
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], spec: &FeatureSpec, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite");
    assert!(want.iter().any(|&v| v != 0.0), "{what}: all zero");
    let e = rel_l2(&unsqrt(got, spec), &unsqrt(want, spec));
    eprintln!("{what}: {} values, rel err {e:.2e}", got.len());
    assert!(e <= TOL, "{what}: rel err {e:e} > {TOL:e}");
}

#[test]
fn variants_match_the_reference_and_an_independent_computation() {
    let w = weights();
    let cpu = CpuBackend::new();
    for (name, spec, pca) in variants() {
        let (x, shape) = input();
        let (rows, cols, want) = reference::features(&w, &spec, pca.as_ref(), &x, shape).unwrap();
        let (stride, golden_rows, golden) = golden(name);
        assert_eq!(rows, golden_rows, "{name}: rows");
        let expected_cols = match name {
            "fc_fc" => PCA_DIMS,
            "fc_conv" => 256,
            _ => 256,
        };
        assert_eq!(cols, expected_cols, "{name}: cols");
        assert_close(
            &strided_rows(&want, rows, cols, stride),
            &golden,
            &spec,
            &format!("{name}: reference vs independent float64"),
        );
        for (backend, got) in [
            ("gpu", extract_on(gpu(), &w, &spec, pca.as_ref())),
            ("cpu backend", extract_on(&cpu, &w, &spec, pca.as_ref())),
        ] {
            assert_eq!((got.0, got.1), (rows, cols), "{name} on {backend}: layout");
            assert_close(
                &got.2,
                &want,
                &spec,
                &format!("{name} on {backend} vs reference"),
            );
            assert_close(
                &strided_rows(&got.2, rows, cols, stride),
                &golden,
                &spec,
                &format!("{name} on {backend} vs independent float64"),
            );
        }
    }
}

/// FC-Conv with the layers the paper names for VGG16 (conv5_3 x fc6) at 256x256, where fc6
/// runs over a 2x2 grid of overlapping 14x14 fields of conv5_3, against the independent
/// float64 computation. The reference is left out: its f64 loops would take minutes over
/// VGG16 at this size; the AlexNet test above holds both backends to it.
#[test]
fn vgg16_fc_conv_matches_an_independent_computation() {
    let bytes = safetensors_bytes(&seeded_tensors_with(Arch::Vgg16, true), None);
    let seeded = Path::new("seeded");
    let w = ModelWeights::from_bytes(&bytes, seeded, Some(Arch::Vgg16), Some("fc6")).unwrap();
    drop(bytes);
    let spec = FeatureSpec {
        repr: Representation::CrossLayer {
            local: "conv5_3".into(),
            guide: "fc6".into(),
            window: LocalWindow::UNIT,
            channel: ChannelPooling::Sum,
            grid: GridMatch::ReceptiveField,
        },
        norm: Normalization::PAPER,
    };
    let (stride, rows, golden) = golden_in("variants_vgg16_256.safetensors", "fc_conv");
    let shape = Shape4::new(1, 256, 256, 3);
    let x = random(shape.len(), 7);
    for backend in ["gpu", "cpu backend"] {
        let got = if backend == "gpu" {
            extract_with(gpu(), &w, &spec, None, None, &x, shape)
        } else {
            extract_with(&CpuBackend::new(), &w, &spec, None, None, &x, shape)
        };
        assert_eq!((got.0, got.1), (rows, 512), "{backend}: layout");
        assert_close(
            &strided_rows(&got.2, rows, 512, stride),
            &golden,
            &spec,
            &format!("vgg16 conv5_3 x fc6 on {backend} vs independent float64"),
        );
    }
}

#[test]
fn variants_refuse_what_they_cannot_compute() {
    let w = weights();
    let ctx = gpu();
    let shape = Shape4::new(1, SIZE, SIZE, 3);
    // fc6 and conv5 live on different grids: unit-by-unit pooling names the way out.
    let spec = FeatureSpec {
        repr: Representation::cross_layer("conv5", "fc6", LocalWindow::UNIT),
        norm: Normalization::PAPER,
    };
    let ex = Extractor::new(ctx, &w, spec, None).unwrap();
    let e = ex.workspace(ctx, shape).err().unwrap().to_string();
    assert!(e.contains("fc-conv"), "{e}");
    // FC-Conv with a PCA of layer t's units, or with a window, is refused.
    let (_, fc_conv, _) = variants().remove(1);
    let e = Extractor::new(ctx, &w, fc_conv.clone(), Some(&seeded_pca()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--pca"), "{e}");
    let mut windowed = fc_conv;
    if let Representation::CrossLayer { window, .. } = &mut windowed.repr {
        *window = LocalWindow::new(3, 3).unwrap();
    }
    let e = windowed.validate(Arch::Alexnet).unwrap_err().to_string();
    assert!(e.contains("1x1"), "{e}");
}

/// AConv pooling (`--layers fc6,aconv`): fc6's local features, PCA-reduced, pooled with the
/// ReLU activations of an added 1x1 layer (seeded here; `train-aconv` trains it) run on fc6,
/// on AlexNet at 287x287 (a 3x3 grid). The GPU and the CPU backend are held to the reference,
/// and the reference's added layer, pooling and normalisation to a float64 computation from
/// the definitions, on the reference's fc6.
#[test]
fn aconv_pooling_matches_the_reference_and_a_float64_computation() {
    use crosspool::classifier::aconv::{AConvLayer, Training};
    use crosspool::classifier::aconv_file::{AConvFile, AConvMeta};
    const FILTERS: usize = 12;
    let w = weights();
    // Weights of either sign, and positive biases, so that most activations are positive and
    // some are cut by the ReLU.
    let mut layer = AConvLayer::init(FILTERS, 4096, 2, 3);
    let b0 = FILTERS * 4096;
    for (i, t) in layer.theta[b0..b0 + FILTERS].iter_mut().enumerate() {
        *t = 0.05 * (i % 4) as f64;
    }
    let file = AConvFile {
        layer,
        meta: AConvMeta {
            version: 1,
            arch: Arch::Alexnet,
            layer: "fc6".into(),
            weights: "seeded".into(),
            weights_fingerprint: String::new(),
            size: SIZE as u32,
            decode: crosspool::input::DecodeMode::Exact,
            classes: vec!["a".into(), "b".into()],
            images: 0,
            training: Training::default(),
            epochs: vec![],
        },
    };
    let conv = file.to_conv().unwrap();
    let spec = FeatureSpec {
        repr: Representation::cross_layer("fc6", "aconv", LocalWindow::UNIT),
        norm: Normalization::PAPER,
    };
    let pca = seeded_pca();
    let (x, shape) = input();
    let (rows, cols, want) =
        reference::features_with_aconv(&w, &spec, Some(&pca), Some(&conv), &x, shape).unwrap();
    assert_eq!((rows, cols), (FILTERS, PCA_DIMS));

    // Float64 from the definitions: a_ik = relu(W_k f_i + b_k), x_i = C (f_i - mean),
    // P_k = sum_i a_ik x_i, then L2 per row and the signed square root.
    let fc6 = reference::network_forward(&w, &x, shape, &["fc6"]).unwrap();
    let (fs, f) = &fc6[0];
    let units = fs.h * fs.w;
    assert_eq!(units, 9);
    let mut independent = Vec::new();
    let mut cut = 0;
    for img in f.chunks(units * 4096) {
        let mut p = vec![0.0f64; FILTERS * PCA_DIMS];
        for fi in img.chunks(4096) {
            let xi: Vec<f64> = (0..PCA_DIMS)
                .map(|d| {
                    let c = &pca.components[d * 4096..(d + 1) * 4096];
                    c.iter()
                        .zip(fi)
                        .zip(&pca.mean)
                        .map(|((&c, &v), &m)| c as f64 * (v as f64 - m as f64))
                        .sum()
                })
                .collect();
            for k in 0..FILTERS {
                let wk = &file.layer.weight()[k * 4096..(k + 1) * 4096];
                let pre: f64 = wk
                    .iter()
                    .zip(fi)
                    .map(|(&a, &v)| a as f32 as f64 * v as f64)
                    .sum::<f64>()
                    + file.layer.bias()[k] as f32 as f64;
                if pre <= 0.0 {
                    cut += 1;
                }
                let a = pre.max(0.0);
                for d in 0..PCA_DIMS {
                    p[k * PCA_DIMS + d] += a * xi[d];
                }
            }
        }
        for row in p.chunks(PCA_DIMS) {
            let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            independent.extend(row.iter().map(|&v| {
                let v = if n > 0.0 { v / n } else { 0.0 };
                (v.signum() * v.abs().sqrt()) as f32
            }));
        }
    }
    assert!(
        cut > 0 && cut < BATCH * units * FILTERS,
        "the ReLU cuts {cut} of {} activations",
        BATCH * units * FILTERS
    );
    assert_close(&want, &independent, &spec, "aconv: reference vs float64");
    let cpu = CpuBackend::new();
    for (backend, got) in [
        (
            "gpu",
            extract_with(gpu(), &w, &spec, Some(&pca), Some(&conv), &x, shape),
        ),
        (
            "cpu backend",
            extract_with(&cpu, &w, &spec, Some(&pca), Some(&conv), &x, shape),
        ),
    ] {
        assert_eq!((got.0, got.1), (rows, cols), "aconv on {backend}: layout");
        assert_close(
            &got.2,
            &want,
            &spec,
            &format!("aconv on {backend} vs reference"),
        );
    }
    // Without the layer, or with it on features that do not use it, the extractor says so.
    let ctx = gpu();
    let ex = Extractor::new(ctx, &w, spec.clone(), Some(&pca)).unwrap();
    let e = ex.workspace(ctx, shape).err().unwrap().to_string();
    assert!(e.contains("--aconv"), "{e}");
    let (_, other, _) = variants().remove(2);
    let e = Extractor::new(ctx, &w, other, None)
        .unwrap()
        .with_aconv(ctx, &conv)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--layers conv4,aconv"), "{e}");
}

/// The AConv layer's pre-activations during training on a backend (what `train-aconv` uses on
/// a GPU) against the host's f64 GEMM, on odd shapes: 517 channels, 17 filters, maps of 3x5,
/// 5 images. Each entry is an f32 sum of 518 products of f32-rounded weights, so it lies
/// within gamma_518 + 2^-24 of the sum of their magnitudes.
#[test]
fn aconv_pre_activations_on_a_backend_match_the_host() {
    use crosspool::classifier::aconv::{AConvLayer, HostF64, PreActivations};
    use crosspool::pipeline::DevicePreActivations;
    let (d, filters, grid, n) = (517, 17, (3, 5), 5);
    let rows = n * grid.0 * grid.1;
    let mut layer = AConvLayer::init(filters, d, 2, 8);
    let b0 = filters * d;
    for (t, r) in layer.theta[b0..b0 + filters]
        .iter_mut()
        .zip(random(filters, 9))
    {
        *t = r as f64;
    }
    let x = random(rows * d, 10);
    let host = HostF64.pre_activations(&layer, &x, rows).unwrap();
    let bound = reference::f32_dot_error_bound(d + 1) as f64 + f32::EPSILON as f64 / 2.0;
    let cpu = CpuBackend::new();
    let on_gpu = DevicePreActivations::new(gpu(), grid)
        .unwrap()
        .pre_activations(&layer, &x, rows)
        .unwrap();
    let on_cpu = DevicePreActivations::new(&cpu, grid)
        .unwrap()
        .pre_activations(&layer, &x, rows)
        .unwrap();
    for (backend, got) in [("gpu", on_gpu), ("cpu backend", on_cpu)] {
        assert_eq!(got.len(), rows * filters, "{backend}");
        let mut worst: f64 = 0.0;
        for (r, xr) in x.chunks(d).enumerate() {
            for i in 0..filters {
                let w = &layer.weight()[i * d..(i + 1) * d];
                let magnitude = w
                    .iter()
                    .zip(xr)
                    .map(|(&a, &b)| (a as f32 as f64 * b as f64).abs())
                    .sum::<f64>()
                    + layer.bias()[i].abs();
                let err = (got[r * filters + i] - host[r * filters + i]).abs();
                worst = worst.max(err / (bound * magnitude));
            }
        }
        eprintln!("aconv pre-activations on {backend}: worst error {worst:.3} of the bound");
        assert!(worst <= 1.0, "{backend}: {worst}");
    }
    // Positions that do not make whole maps are refused.
    let e = DevicePreActivations::new(gpu(), grid)
        .unwrap()
        .pre_activations(&layer, &x[..d], 1)
        .unwrap_err();
    assert!(e.to_string().contains("maps of 3x5"), "{e}");
}
