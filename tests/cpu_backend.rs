//! The native CPU backend against the CPU reference: its operations one by one (max pooling,
//! region pooling and normalisation equal bit for bit; cross-layer pooling within the f32
//! bound of its sums) and whole features through the same `Extractor` and `Moments` the GPU
//! runs, within the tolerance the GPU is held to (tests/features.rs).

mod common;

use common::{assert_reduction_close, random, rel_l2, seeded_weights, unsqrt};
use crosspool::cpu::{ops, CpuBackend, HostTensor};
use crosspool::features::{FeatureSpec, Representation};
use crosspool::model::{Arch, ModelWeights};
use crosspool::pca::{MomentAccumulator, Pca};
use crosspool::pipeline::{Extractor, Moments, Storage};
use crosspool::pooling::{ChannelPooling, LocalWindow, Normalization, RegionPoolMode};
use crosspool::reference;
use crosspool::shape::{MaxPool2dSpec, Shape4, Window2d};

/// As tests/features.rs: the forward pass differs from the reference by at most ~2e-6
/// normwise, pooling adds short sums.
const TOL: f64 = 1e-5;

#[test]
fn max_pooling_equals_the_reference() {
    for (shape, window) in [
        (Shape4::new(2, 13, 11, 5), Window2d::square(2, 2, 0)),
        (Shape4::new(1, 9, 10, 3), Window2d::square(3, 2, 1)),
        (Shape4::new(3, 7, 7, 17), Window2d::square(3, 1, 1)),
    ] {
        let spec = MaxPool2dSpec { window };
        let x = random(shape.len(), 5);
        let (out, want) = reference::max_pool2d(&x, shape, spec).unwrap();
        let mut got = vec![0.0; out.len()];
        assert_eq!(ops::max_pool2d(&x, shape, spec, &mut got).unwrap(), out);
        assert_eq!(got, want, "{shape} {window:?}");
    }
}

#[test]
fn cross_layer_pooling_is_within_the_bound() {
    let (sa, sx) = (Shape4::new(4, 5, 7, 6), Shape4::new(4, 5, 7, 9));
    let (a, x) = (random(sa.len(), 1), random(sx.len(), 2));
    let win = LocalWindow::new(3, 3).unwrap();
    for (aw, xw, group) in [
        (LocalWindow::UNIT, LocalWindow::UNIT, 1),
        (LocalWindow::UNIT, win, 2),
        (win, LocalWindow::UNIT, 4),
    ] {
        let want =
            reference::cross_layer(&a, sa, aw, &x, sx, xw, group, ChannelPooling::Sum).unwrap();
        let mut got = vec![f32::NAN; want.values.len()];
        ops::cross_layer(
            Some((&a, sa, aw)),
            &x,
            sx,
            xw,
            group,
            ChannelPooling::Sum,
            &mut got,
        )
        .unwrap();
        let units = group * sx.h * sx.w;
        assert_reduction_close(&got, &want, units, &format!("{aw} x {xw} / {group}"));
    }
    // A constant guide: the plain sums.
    let ones = Shape4::new(4, 5, 7, 1);
    let want = reference::cross_layer(
        &vec![1.0; ones.len()],
        ones,
        LocalWindow::UNIT,
        &x,
        sx,
        win,
        2,
        ChannelPooling::Sum,
    )
    .unwrap();
    let mut got = vec![f32::NAN; want.values.len()];
    ops::cross_layer(None, &x, sx, win, 2, ChannelPooling::Sum, &mut got).unwrap();
    assert_reduction_close(&got, &want, 2 * 5 * 7, "ones");
    // Different grids and groups that do not divide the batch are errors.
    let mut out = vec![0.0; got.len()];
    let other = Shape4::new(4, 5, 6, 6);
    assert!(ops::cross_layer(
        Some((&a[..other.len()], other, LocalWindow::UNIT)),
        &x,
        sx,
        win,
        2,
        ChannelPooling::Sum,
        &mut out
    )
    .is_err());
    assert!(ops::cross_layer(None, &x, sx, win, 3, ChannelPooling::Sum, &mut out).is_err());
}

#[test]
fn pooling_normalised_in_one_pass() {
    // Per-image sum pooling normalised block by block as it is pooled: the sums within the
    // bound of the reference's, and under every normalisation the values equal the
    // reference's normalisation of those sums bit for bit. 130 guide channels make blocks of
    // 56 rows, the last partial, and a partial tile; 70 columns a partial panel; then 3x3
    // windows on both layers; three images. A guide channel of zeros gives a zero row.
    let win = LocalWindow::new(3, 3).unwrap();
    let cases = [
        (130, LocalWindow::UNIT, 70, LocalWindow::UNIT),
        (15, win, 8, win),
    ];
    for (seed, (ca, aw, cx, xw)) in cases.into_iter().enumerate() {
        let (sa, sx) = (Shape4::new(3, 5, 7, ca), Shape4::new(3, 5, 7, cx));
        let mut a = random(sa.len(), 70 + seed as u64);
        a.iter_mut().skip(5).step_by(ca).for_each(|v| *v = 0.0);
        let x: Vec<f32> = random(sx.len(), 80 + seed as u64)
            .iter()
            .map(|v| v - 0.5)
            .collect();
        let (ka, kx) = (aw.feature_len(ca), xw.feature_len(cx));
        let what = format!("{ka} x {kx}");
        let want = reference::cross_layer(&a, sa, aw, &x, sx, xw, 1, ChannelPooling::Sum).unwrap();
        let pooled = |norm: Normalization| {
            let mut got = vec![f32::NAN; want.values.len()];
            let (g, m) = (Some((a.as_slice(), sa, aw)), ChannelPooling::Sum);
            ops::cross_layer_normalized(g, &x, sx, xw, 1, m, norm, &mut got).unwrap();
            got
        };
        let sums = pooled(Normalization::NONE);
        assert_reduction_close(&sums, &want, 5 * 7, &what);
        assert!(sums[5 * kx..6 * kx].iter().all(|&v| v == 0.0), "{what}");
        for flags in 0..8u32 {
            let norm = Normalization {
                channel_l2: flags & 1 != 0,
                signed_sqrt: flags & 2 != 0,
                global_l2: flags & 4 != 0,
            };
            let mut expected = sums.clone();
            reference::normalize(&mut expected, ka, kx, norm);
            assert_eq!(pooled(norm), expected, "{what}, {norm:?}");
        }
    }
}

#[test]
fn region_pooling_and_normalisation_equal_the_reference() {
    let s = Shape4::new(2, 6, 5, 7);
    let x = random(s.len(), 3);
    let regions = [[0, 6, 0, 5], [0, 3, 0, 3], [2, 6, 1, 5]];
    for mode in [RegionPoolMode::Sum, RegionPoolMode::Max] {
        let want = reference::region_pool(&x, s, &regions, mode);
        let mut got = vec![0.0; want.len()];
        ops::region_pool(&x, s, &regions, mode, &mut got).unwrap();
        assert_eq!(got, want, "{mode:?}");
    }
    for norm in [Normalization::PAPER, Normalization::RETRIEVAL] {
        let mut want = random(2 * 4 * 5, 9);
        want[3] = 0.0;
        let mut got = want.clone();
        reference::normalize(&mut want, 4, 5, norm);
        ops::normalize(&mut got, 4, 5, norm);
        assert_eq!(got, want);
    }
}

#[test]
fn normalisation_equals_the_reference_in_every_combination() {
    // One image (its rows split across threads) and five (images across threads); rows
    // longer than the 8 partial sums, with a remainder; a zero row, and in the batch a
    // zero image, which must stay zero; negative values for the signed square root.
    for (images, rows, cols) in [(1, 37, 61), (5, 9, 300)] {
        for flags in 0..8u32 {
            let norm = Normalization {
                channel_l2: flags & 1 != 0,
                signed_sqrt: flags & 2 != 0,
                global_l2: flags & 4 != 0,
            };
            let mut want: Vec<f32> = random(images * rows * cols, 40 + flags as u64)
                .iter()
                .map(|v| v - 0.5)
                .collect();
            want[cols..2 * cols].fill(0.0);
            if images > 1 {
                want[rows * cols..2 * rows * cols].fill(0.0);
            }
            let mut got = want.clone();
            reference::normalize(&mut want, rows, cols, norm);
            ops::normalize(&mut got, rows, cols, norm);
            assert_eq!(got, want, "{norm:?} on {images} x {rows} x {cols}");
            if images > 1 {
                assert!(got[rows * cols..2 * rows * cols].iter().all(|&v| v == 0.0));
            }
        }
    }
}

fn features_on_cpu(
    w: &ModelWeights,
    spec: &FeatureSpec,
    pca: Option<&Pca>,
    x: &[f32],
    shape: Shape4,
) -> Vec<f32> {
    let cpu = CpuBackend::new();
    let ex = Extractor::new(&cpu, w, spec.clone(), pca).unwrap();
    let ws = ex.workspace(&cpu, shape).unwrap();
    let t = HostTensor::from_values(x.to_vec(), shape).unwrap();
    cpu.download(ex.extract(&cpu, &t, &ws).unwrap()).unwrap()
}

#[test]
fn whole_features_match_the_reference() {
    let alexnet = seeded_weights(Arch::Alexnet);
    let shape = Shape4::new(2, 99, 99, 3);
    let x: Vec<f32> = random(shape.len(), 99).iter().map(|v| v * 2.0).collect();
    let win = LocalWindow::new(3, 3).unwrap();
    let cases = [
        (
            Representation::paper_default(Arch::Alexnet),
            Normalization::PAPER,
        ),
        (
            Representation::cross_layer("conv4", "conv5", win),
            Normalization::RETRIEVAL,
        ),
        (
            Representation::Gram {
                local: "conv5".into(),
                window: LocalWindow::UNIT,
            },
            Normalization::PAPER,
        ),
        (
            Representation::Region {
                local: "conv5".into(),
                mode: RegionPoolMode::Max,
                levels: 2,
            },
            Normalization::RETRIEVAL,
        ),
    ];
    for (repr, norm) in cases {
        let spec = FeatureSpec { repr, norm };
        let got = features_on_cpu(&alexnet, &spec, None, &x, shape);
        let (_, _, want) = reference::features(&alexnet, &spec, None, &x, shape).unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "{}", spec.repr);
        assert!(want.iter().any(|&v| v != 0.0), "{}: all zero", spec.repr);
        let e = rel_l2(&unsqrt(&got, &spec), &unsqrt(&want, &spec));
        eprintln!("{}: rel err {e:.2e}", spec.repr);
        assert!(e <= TOL, "{}: rel err {e:e}", spec.repr);
    }
}

#[test]
fn vgg16_moments_pca_and_features_match_the_reference() {
    let cpu = CpuBackend::new();
    let w = seeded_weights(Arch::Vgg16);
    let shape = Shape4::new(2, 64, 64, 3);
    let x: Vec<f32> = random(shape.len(), 4).iter().map(|v| v * 2.0).collect();
    let m = Moments::new(&cpu, &w, "conv5_2", LocalWindow::UNIT).unwrap();
    let ws = m.workspace(&cpu, shape).unwrap();
    let mut got = MomentAccumulator::new(512);
    let t = HostTensor::from_values(x.clone(), shape).unwrap();
    m.add_batch(&cpu, &t, &ws, &mut got).unwrap();
    let r = reference::ReferenceBackend;
    let mr = Moments::new(&r, &w, "conv5_2", LocalWindow::UNIT).unwrap();
    let wr = mr.workspace(&r, shape).unwrap();
    let mut want = MomentAccumulator::new(512);
    let tr = reference::CpuTensor::from_values(x.clone(), shape).unwrap();
    mr.add_batch(&r, &tr, &wr, &mut want).unwrap();
    assert_eq!(got.count, want.count);
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    assert!(rel_l2(&f(&got.sum), &f(&want.sum)) <= TOL);
    assert!(rel_l2(&f(&got.second), &f(&want.second)) <= TOL);
    let pca = Pca::fit(&want, "vgg16", "conv5_2", LocalWindow::UNIT, 512, Some(32)).unwrap();
    let spec = FeatureSpec {
        repr: Representation::paper_default(Arch::Vgg16),
        norm: Normalization::RETRIEVAL,
    };
    let on_cpu = features_on_cpu(&w, &spec, Some(&pca), &x, shape);
    let (_, _, want) = reference::features(&w, &spec, Some(&pca), &x, shape).unwrap();
    let e = rel_l2(&unsqrt(&on_cpu, &spec), &unsqrt(&want, &spec));
    eprintln!("vgg16 with PCA 32: rel err {e:.2e}");
    assert!(e <= TOL, "rel err {e:e}");
}

#[test]
fn max_channel_pooling_and_field_sums_equal_the_reference() {
    // f32 products rounded once and a maximum of them: the reference's maximum of exact
    // products rounded once, bit for bit (rounding is monotonic). Signed guides, 3 units.
    let win = LocalWindow::new(3, 3).unwrap();
    for (sa, sx, xw, group) in [
        (
            Shape4::new(2, 1, 3, 70),
            Shape4::new(2, 1, 3, 67),
            LocalWindow::UNIT,
            1,
        ),
        (Shape4::new(4, 5, 7, 17), Shape4::new(4, 5, 7, 5), win, 2),
    ] {
        let (a, x) = (random(sa.len(), 11), random(sx.len(), 12));
        let max = ChannelPooling::Max;
        let want = reference::cross_layer(&a, sa, LocalWindow::UNIT, &x, sx, xw, group, max)
            .unwrap()
            .values;
        let mut got = vec![f32::NAN; want.len()];
        let guide = Some((a.as_slice(), sa, LocalWindow::UNIT));
        ops::cross_layer(guide, &x, sx, xw, group, max, &mut got).unwrap();
        assert_eq!(got, want, "max {sa} x {sx}");
        // With 3 units some rows have only negative products.
        let few_units = sx.h * sx.w * group < 16;
        assert!(want.iter().any(|&v| v > 0.0));
        assert!(want.iter().any(|&v| v < 0.0) || !few_units);
    }
    // The square roots of sums over VGG16's fc6 receptive fields: summed in f64 in the
    // reference's order, so equal.
    let s = Shape4::new(2, 17, 16, 9);
    let fields = Arch::Vgg16
        .receptive_fields("conv5_3", "fc6", (17, 16), (2, 2))
        .unwrap();
    let x = random(s.len(), 13);
    let mut got = vec![f32::NAN; s.n * fields.len() * s.c];
    ops::field_pool(&x, s, &fields, &mut got).unwrap();
    assert_eq!(got, reference::field_pool(&x, s, &fields).0);
}
