//! Whole features, end to end: network, PCA, pooling and normalisation on the GPU against
//! the CPU reference, on AlexNet (the small net) and VGG16 at low resolution with seeded
//! weights; PCA moments; batch results equal single-image results.

mod common;

use common::{gpu, random, rel_l2, seeded_weights, unsqrt};
use crosspool::features::{FeatureSpec, Representation};
use crosspool::gpu::GpuTensor;
use crosspool::model::{Arch, ModelWeights};
use crosspool::pca::{MomentAccumulator, Pca};
use crosspool::pipeline::{Extractor, MomentsGpu};
use crosspool::pooling::{ChannelPooling, LocalWindow, Normalization, RegionPoolMode};
use crosspool::reference;
use crosspool::shape::Shape4;

/// Normwise error allowed against the reference (see tests/golden.rs for the forward pass:
/// measured there at most 1.8e-6; pooling adds sums of at most 16 terms).
const TOL: f64 = 1e-5;

fn input(shape: Shape4, seed: u64) -> Vec<f32> {
    // Roughly the range of preprocessed pixels.
    random(shape.len(), seed).iter().map(|v| v * 2.0).collect()
}

fn check(
    w: &ModelWeights,
    spec: FeatureSpec,
    pca: Option<&Pca>,
    shape: Shape4,
    what: &str,
) -> Vec<f32> {
    let ctx = gpu();
    let x = input(shape, 99);
    let ex = Extractor::new(ctx, w, spec.clone(), pca).unwrap();
    let ws = ex.workspace(ctx, shape).unwrap();
    let gx = GpuTensor::upload(ctx, &x, shape, "x").unwrap();
    let f = ex.extract(ctx, &gx, &ws).unwrap();
    let got = f.download(ctx).unwrap();
    let (rows, cols, want) = reference::features(w, &spec, pca, &x, shape).unwrap();
    assert_eq!(
        (f.images, f.rows, f.cols),
        (shape.n, rows, cols),
        "{what}: layout"
    );
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_l2(&unsqrt(&got, &spec), &unsqrt(&want, &spec));
    eprintln!("{what}: {} x {rows} x {cols}, rel err {e:.2e}", shape.n);
    assert!(e <= TOL, "{what}: rel err {e:e} > {TOL:e}");
    assert!(
        want.iter().any(|&v| v != 0.0),
        "{what}: reference is all zero"
    );
    got
}

#[test]
fn alexnet_cross_layer_conv4_conv5() {
    let w = seeded_weights(Arch::Alexnet);
    let shape = Shape4::new(2, 67, 67, 3);
    let spec = FeatureSpec {
        repr: Representation::paper_default(Arch::Alexnet),
        norm: Normalization::PAPER,
    };
    check(&w, spec, None, shape, "alexnet conv4 x conv5, 1x1");
    let repr = Representation::cross_layer("conv4", "conv5", LocalWindow::new(3, 3).unwrap());
    check(
        &w,
        FeatureSpec {
            repr,
            norm: Normalization::RETRIEVAL,
        },
        None,
        shape,
        "alexnet conv4 x conv5, 3x3 neighbourhoods",
    );
}

#[test]
fn baselines_gram_sum_and_max_pyramids() {
    let w = seeded_weights(Arch::Alexnet);
    let shape = Shape4::new(2, 99, 99, 3);
    let sqrt_l2 = Normalization {
        channel_l2: false,
        signed_sqrt: true,
        global_l2: true,
    };
    for (repr, norm, what) in [
        (
            Representation::Gram {
                local: "conv5".into(),
                window: LocalWindow::UNIT,
            },
            Normalization::PAPER,
            "gram conv5",
        ),
        (
            Representation::Region {
                local: "conv5".into(),
                mode: RegionPoolMode::Sum,
                levels: 0,
            },
            sqrt_l2,
            "sum pooling + sqrt",
        ),
        (
            Representation::Region {
                local: "conv5".into(),
                mode: RegionPoolMode::Max,
                levels: 2,
            },
            Normalization {
                signed_sqrt: false,
                ..sqrt_l2
            },
            "max pyramid 0-2",
        ),
    ] {
        check(&w, FeatureSpec { repr, norm }, None, shape, what);
    }
}

/// PCA fitted from GPU moments of VGG16 conv5_2, then features with the projection.
#[test]
fn vgg16_with_pca_fitted_on_the_gpu() {
    let ctx = gpu();
    let w = seeded_weights(Arch::Vgg16);
    let shape = Shape4::new(2, 64, 64, 3);
    let moments = MomentsGpu::new(ctx, &w, "conv5_2", LocalWindow::UNIT).unwrap();
    let ws = moments.workspace(ctx, shape).unwrap();
    let mut acc = MomentAccumulator::new(512);
    let mut all = Vec::new();
    for seed in [1, 2] {
        let x = input(shape, seed);
        let gx = GpuTensor::upload(ctx, &x, shape, "x").unwrap();
        moments.add_batch(ctx, &gx, &ws, &mut acc).unwrap();
        all.push(x);
    }
    // The same moments on the CPU.
    let mut want = MomentAccumulator::new(512);
    for x in &all {
        let (s, a) = reference::network_forward(&w, x, shape, &["conv5_2"])
            .unwrap()
            .remove(0);
        let ones = vec![1.0; s.n * s.h * s.w];
        let s1 = Shape4::new(s.n, s.h, s.w, 1);
        let sum = reference::cross_layer(
            &ones,
            s1,
            LocalWindow::UNIT,
            &a,
            s,
            LocalWindow::UNIT,
            s.n,
            ChannelPooling::Sum,
        )
        .unwrap();
        let second = reference::cross_layer(
            &a,
            s,
            LocalWindow::UNIT,
            &a,
            s,
            LocalWindow::UNIT,
            s.n,
            ChannelPooling::Sum,
        )
        .unwrap();
        want.add(&sum.values, &second.values, (s.n * s.h * s.w) as u64);
    }
    assert_eq!(acc.count, want.count);
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    assert!(rel_l2(&f(&acc.sum), &f(&want.sum)) <= TOL);
    assert!(rel_l2(&f(&acc.second), &f(&want.second)) <= TOL);

    let pca = Pca::fit(&acc, "vgg16", "conv5_2", LocalWindow::UNIT, 512, Some(64)).unwrap();
    let spec = FeatureSpec {
        repr: Representation::paper_default(Arch::Vgg16),
        norm: Normalization::RETRIEVAL,
    };
    check(
        &w,
        spec.clone(),
        Some(&pca),
        shape,
        "vgg16 conv5_2 (PCA 64) x conv5_3",
    );
    // A PCA of another layer is refused.
    let other = Pca {
        layer: "conv4_3".into(),
        ..pca
    };
    assert!(Extractor::new(ctx, &w, spec, Some(&other)).is_err());
}

/// Every image's feature is the same whether it is extracted alone or in a batch.
#[test]
fn batch_equals_single_images() {
    let ctx = gpu();
    let w = seeded_weights(Arch::Alexnet);
    let spec = FeatureSpec {
        repr: Representation::paper_default(Arch::Alexnet),
        norm: Normalization::RETRIEVAL,
    };
    let ex = Extractor::new(ctx, &w, spec, None).unwrap();
    let batch = Shape4::new(3, 67, 67, 3);
    let x = input(batch, 5);
    let ws = ex.workspace(ctx, batch).unwrap();
    let all = ex
        .extract(ctx, &GpuTensor::upload(ctx, &x, batch, "x").unwrap(), &ws)
        .unwrap()
        .download(ctx)
        .unwrap();
    let one = Shape4::new(1, 67, 67, 3);
    let ws1 = ex.workspace(ctx, one).unwrap();
    let per = all.len() / 3;
    for i in 0..3 {
        let xi = &x[i * one.len()..(i + 1) * one.len()];
        let fi = ex
            .extract(ctx, &GpuTensor::upload(ctx, xi, one, "x").unwrap(), &ws1)
            .unwrap()
            .download(ctx)
            .unwrap();
        assert_eq!(fi, all[i * per..(i + 1) * per], "image {i}");
    }
}

/// The per-image mean of every channel of layer t+1 that cross-layer extraction keeps for
/// retrieval's channel selection.
#[test]
fn guide_means_are_channel_means_of_layer_t1() {
    let ctx = gpu();
    let w = seeded_weights(Arch::Alexnet);
    let shape = Shape4::new(3, 67, 67, 3);
    let x = input(shape, 5);
    let spec = FeatureSpec {
        repr: Representation::paper_default(Arch::Alexnet),
        norm: Normalization::PAPER,
    };
    let ex = Extractor::new(ctx, &w, spec, None).unwrap();
    let ws = ex.workspace(ctx, shape).unwrap();
    ex.extract(ctx, &GpuTensor::upload(ctx, &x, shape, "x").unwrap(), &ws)
        .unwrap();
    let got = ws
        .guide_means(ctx)
        .unwrap()
        .expect("cross-layer keeps means");
    let (s, a) = reference::network_forward(&w, &x, shape, &["conv5"])
        .unwrap()
        .remove(0);
    assert_eq!(got.len(), s.n * s.c);
    let units = s.h * s.w;
    let want: Vec<f32> = (0..s.n * s.c)
        .map(|nc| {
            let (n, c) = (nc / s.c, nc % s.c);
            let sum: f64 = (0..units)
                .map(|u| a[(n * units + u) * s.c + c] as f64)
                .sum();
            (sum / units as f64) as f32
        })
        .collect();
    // The activations carry five layers of f32 rounding (GPU and reference sum in different
    // orders), so the means are held to the same whole-vector bound as the features.
    let e = rel_l2(&got, &want);
    assert!(e <= TOL, "guide means: rel err {e:e} > {TOL:e}");
    assert!(got.iter().any(|&v| v > 0.0), "all means are zero");
    // Baselines keep none.
    let spec = FeatureSpec {
        repr: Representation::Gram {
            local: "conv4".into(),
            window: LocalWindow::UNIT,
        },
        norm: Normalization::PAPER,
    };
    let ex = Extractor::new(ctx, &w, spec, None).unwrap();
    let ws = ex.workspace(ctx, shape).unwrap();
    assert!(ws.guide_means(ctx).unwrap().is_none());
}

/// The pipelines are written against the backend's entry points alone: the same `Extractor`
/// and `Moments` run on the CPU reference backend, equal bit for bit to the reference's own
/// pipeline (same ops, same order), and within the f32 tolerance of the GPU.
#[test]
fn the_same_pipelines_run_on_the_reference_backend() {
    use crosspool::pipeline::{Moments, Storage};
    use crosspool::reference::{CpuTensor, ReferenceBackend};
    let cpu = ReferenceBackend;
    let w = seeded_weights(Arch::Alexnet);
    let shape = Shape4::new(2, 67, 67, 3);
    let x = input(shape, 7);
    for (repr, norm) in [
        (
            Representation::paper_default(Arch::Alexnet),
            Normalization::PAPER,
        ),
        (
            Representation::Region {
                local: "conv5".into(),
                mode: RegionPoolMode::Max,
                levels: 1,
            },
            Normalization::RETRIEVAL,
        ),
    ] {
        let spec = FeatureSpec { repr, norm };
        let ex = Extractor::new(&cpu, &w, spec.clone(), None).unwrap();
        let ws = ex.workspace(&cpu, shape).unwrap();
        let t = CpuTensor::from_values(x.clone(), shape).unwrap();
        let got = cpu.download(ex.extract(&cpu, &t, &ws).unwrap()).unwrap();
        let (_, _, want) = reference::features(&w, &spec, None, &x, shape).unwrap();
        assert_eq!(got, want, "{}", spec.repr);
        let ctx = gpu();
        let gex = Extractor::new(ctx, &w, spec.clone(), None).unwrap();
        let gws = gex.workspace(ctx, shape).unwrap();
        let gx = GpuTensor::upload(ctx, &x, shape, "x").unwrap();
        let on_gpu = gex.extract(ctx, &gx, &gws).unwrap().download(ctx).unwrap();
        let e = rel_l2(&unsqrt(&on_gpu, &spec), &unsqrt(&got, &spec));
        assert!(e <= TOL, "{}: rel err {e:e}", spec.repr);
    }

    // PCA moments: the same accumulation on both backends.
    let win = LocalWindow::new(3, 3).unwrap();
    let m_cpu = Moments::new(&cpu, &w, "conv5", win).unwrap();
    let ws = m_cpu.workspace(&cpu, shape).unwrap();
    let f = win.feature_len(m_cpu.channels(&ws));
    let mut a = MomentAccumulator::new(f);
    let t = CpuTensor::from_values(x.clone(), shape).unwrap();
    m_cpu.add_batch(&cpu, &t, &ws, &mut a).unwrap();
    let ctx = gpu();
    let m_gpu = MomentsGpu::new(ctx, &w, "conv5", win).unwrap();
    let gws = m_gpu.workspace(ctx, shape).unwrap();
    let mut b = MomentAccumulator::new(f);
    let gx = GpuTensor::upload(ctx, &x, shape, "x").unwrap();
    m_gpu.add_batch(ctx, &gx, &gws, &mut b).unwrap();
    let fit =
        |acc: &MomentAccumulator| Pca::fit(acc, "alexnet", "conv5", win, 256, Some(8)).unwrap();
    let (pa, pb) = (fit(&a), fit(&b));
    assert_eq!(pa.units, pb.units);
    let e = rel_l2(&pa.eigenvalues, &pb.eigenvalues);
    assert!(e <= TOL, "eigenvalues differ by {e:e}");
}
