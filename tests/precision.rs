//! `--precision f16` end to end on software Vulkan (which has shader-f16): the fidelity of
//! f16 storage on the real VGG16 (features of real photos, retrieval mAP), and images whose
//! activations overflow f16 failing with the reason instead of turning infinite; and
//! `--precision bf16` on the CPU backend (AMX), with the same fidelity figures.

mod common;

use common::temp_dir;
use crosspool::classifier::data::FeatureSet;
use crosspool::cpu::Products;
use crosspool::model::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn hed_weights() -> PathBuf {
    let w = repo("weights/vgg16_hed.safetensors");
    assert!(
        w.exists(),
        "{} is missing: run bash tools/fetch_weights.sh",
        w.display()
    );
    w
}

/// Runs crosspool with `args`; returns (exit status, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "crosspool {args:?}: {err}");
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    crosspool::reference::compare::cosine(a, b)
}

/// Features of tests/data/photos with the real VGG16 (HED), extracted on `device` in f32 and
/// in `precision`.
fn photos_in(device: &str, precision: &str) -> (FeatureSet, FeatureSet) {
    let w = hed_weights();
    let d = temp_dir(&format!("precision-photos-{precision}"));
    let photos = repo("tests/data/photos");
    let extract = |name: &str, precision: &str| {
        let out = d.0.join(name);
        ok(&[
            "extract",
            "-q",
            "--device",
            device,
            "--precision",
            precision,
            "--weights",
            w.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            photos.to_str().unwrap(),
        ]);
        FeatureSet::read(&out).unwrap()
    };
    let f32s = extract("f32", "f32");
    // f32 runs write settings as before f16 and bf16 existed (older crosspools read them).
    let json = std::fs::read_to_string(d.0.join("f32/extract.json")).unwrap();
    assert!(!json.contains("precision"), "{json}");
    assert!(!json.contains("products"), "{json}");
    (f32s, extract(precision, precision))
}

/// Per image, cosine of `low`'s features to `f32s`' at least 0.9999 (and not equal).
fn assert_cosine_0_9999(f32s: &FeatureSet, low: &FeatureSet, what: &str) {
    assert_eq!(f32s.paths, low.paths);
    assert_eq!(low.paths.len(), 4);
    assert!(low.failed.is_empty(), "{:?}", low.failed);
    let dd = f32s.d;
    let mut worst = 1.0f64;
    for (i, p) in f32s.paths.iter().enumerate() {
        let (a, b) = (&f32s.x[i * dd..(i + 1) * dd], &low.x[i * dd..(i + 1) * dd]);
        assert_ne!(
            a, b,
            "{p}: {what} gave the f32 features bit for bit: was it {what}?"
        );
        let c = cosine(a, b);
        eprintln!("{p}: cosine {what} vs f32 {c:.9} (1 - c = {:.2e})", 1.0 - c);
        worst = worst.min(c);
    }
    assert!(worst >= 0.9999, "{what}: worst cosine {worst}");
}

/// The README's fidelity figures: the real VGG16 (HED) on tests/data/photos, f16 storage on
/// the GPU against f32 on the GPU, feature cosine at least 0.9999 per image.
#[test]
fn f16_features_of_real_photos_keep_cosine_0_9999() {
    let (f32s, f16s) = photos_in("gpu", "f16");
    assert_eq!(f16s.settings.precision, crosspool::gpu::Dtype::F16);
    assert_eq!(f32s.settings.precision, crosspool::gpu::Dtype::F32);
    assert_cosine_0_9999(&f32s, &f16s, "f16");
}

/// Whether this CPU runs `--precision bf16`; with `CROSSPOOL_REQUIRE_AMX=1` (as CI sets where
/// the CPU lists AMX-BF16) a program that cannot use it fails instead. Where it is missing,
/// asking for it is refused with the reason.
fn bf16_runs_here() -> bool {
    let available = Products::Bf16.is_available();
    if std::env::var("CROSSPOOL_REQUIRE_AMX").is_ok_and(|v| v == "1") {
        assert!(
            available,
            "CROSSPOOL_REQUIRE_AMX=1 but AMX-BF16 is not available"
        );
    }
    if !available {
        let w = hed_weights();
        let (code, _, err) = run(&[
            "bench",
            "--device",
            "cpu",
            "--precision",
            "bf16",
            "--weights",
            w.to_str().unwrap(),
            "--size",
            "32",
            "--batch",
            "1",
            "--iters",
            "1",
        ]);
        assert_ne!(code, 0);
        assert!(err.contains("AMX-BF16"), "{err}");
    }
    available
}

/// The README's bf16 figures: the CPU backend's bf16 products (AMX) against its f32, on the
/// real VGG16 and tests/data/photos: feature cosine at least 0.9999 per image; recorded.
#[test]
fn bf16_features_of_real_photos_keep_cosine_0_9999() {
    if !bf16_runs_here() {
        return;
    }
    let (f32s, bf16s) = photos_in("cpu", "bf16");
    assert_eq!(bf16s.settings.products, Products::Bf16);
    assert_eq!(bf16s.settings.precision, crosspool::gpu::Dtype::F32);
    assert_eq!(f32s.settings.products, Products::F32);
    assert_cosine_0_9999(&f32s, &bf16s, "bf16");
}

/// Retrieval on tests/data/retrieval (the chain of tests/retrieval.rs) with the database
/// extracted in f32 on the CPU and in `precision` on `device`: mAP within 0.005 for 1-bit
/// codes at k = 50 and all, and for floats.
fn retrieval_map_within_0_005_of_f32(precision: &str, device: &str) {
    let w = hed_weights();
    let w = w.to_str().unwrap();
    let d = temp_dir(&format!("precision-retrieval-{precision}"));
    let set = repo("tests/data/retrieval");
    let gt = set.join("groundtruth.jsonl");
    let p = |n: &str| d.0.join(n).to_str().unwrap().to_string();
    ok(&[
        "fit-pca",
        "--device",
        "cpu",
        "--weights",
        w,
        "--size",
        "160",
        "--dims",
        "256",
        "--out",
        &p("pca.safetensors"),
        repo("tests/data/photos").to_str().unwrap(),
    ]);
    let mut maps = Vec::new();
    for (precision, device) in [("f32", "cpu"), (precision, device)] {
        let feats = p(&format!("features-{precision}"));
        ok(&[
            "extract",
            "--quiet",
            "--device",
            device,
            "--precision",
            precision,
            "--weights",
            w,
            "--size",
            "160",
            "--pca",
            &p("pca.safetensors"),
            "--norm",
            "retrieval",
            "--out",
            &feats,
            set.to_str().unwrap(),
        ]);
        let mut row = Vec::new();
        for (binarize, k) in [("bits1", "50"), ("bits1", "all"), ("none", "50")] {
            let index = p(&format!("index-{precision}-{binarize}"));
            ok(&["index", &feats, "--out", &index, "--binarize", binarize]);
            let out = ok(&[
                "eval",
                "--json",
                "--device",
                "cpu",
                "--index",
                &index,
                "--ground-truth",
                gt.to_str().unwrap(),
                "-k",
                k,
            ]);
            let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            row.push((format!("{binarize} k={k}"), v["map"].as_f64().unwrap()));
        }
        maps.push(row);
    }
    for ((what, m32), (_, low)) in maps[0].iter().zip(&maps[1]) {
        eprintln!("mAP {what}: f32 {m32:.4}, {precision} {low:.4}");
        assert!(
            (m32 - low).abs() <= 0.005,
            "{what}: f32 {m32} vs {precision} {low}"
        );
        assert!(*m32 >= 0.85, "{what}: {m32}");
    }
}

/// f16 storage on the GPU (software Vulkan here).
#[test]
fn f16_retrieval_map_within_0_005_of_f32() {
    retrieval_map_within_0_005_of_f32("f16", "gpu");
}

/// bf16 products on the CPU backend, where AMX runs them.
#[test]
fn bf16_retrieval_map_within_0_005_of_f32() {
    if bf16_runs_here() {
        retrieval_map_within_0_005_of_f32("bf16", "cpu");
    }
}

/// Seeded AlexNet whose first layer weighs the red channel by 10^5: a red image's conv1
/// activations pass 65504, a blue one's are cut to zero by the ReLU.
fn red_sensitive_alexnet(dir: &Path) -> PathBuf {
    let mut tensors = common::seeded_tensors(Arch::Alexnet);
    let (name, _, shape, bytes) = &mut tensors[0];
    assert_eq!(name, "features.0.weight");
    let (out_c, in_c, kk) = (shape[0], shape[1], shape[2] * shape[3]);
    let mut w: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
    for o in 0..out_c {
        for k in 0..kk {
            w[(o * in_c) * kk + k] = 1.0e5;
        }
    }
    *bytes = bytemuck::cast_slice(&w).to_vec();
    let path = dir.join("red.safetensors");
    let meta =
        std::collections::HashMap::from([("crosspool.arch".to_string(), "alexnet".to_string())]);
    std::fs::write(&path, common::safetensors_bytes(&tensors, Some(meta))).unwrap();
    path
}

#[test]
fn images_that_overflow_f16_fail_with_the_reason() {
    let d = temp_dir("precision-overflow");
    let weights = red_sensitive_alexnet(&d.0);
    let images = d.0.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (name, rgb) in [("blue.png", [0u8, 0, 255]), ("red.png", [255, 0, 0])] {
        image::RgbImage::from_pixel(96, 96, image::Rgb(rgb))
            .save(images.join(name))
            .unwrap();
    }
    let extract = |precision: &str| {
        let out = d.0.join(precision);
        let r = run(&[
            "extract",
            "-q",
            "--device",
            "gpu",
            "--batch",
            "2",
            "--size",
            "96",
            "--precision",
            precision,
            "--weights",
            weights.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            images.to_str().unwrap(),
        ]);
        (r, FeatureSet::read(&out).unwrap())
    };
    // f16: the red image fails, naming why and what to do; the blue one, in the same batch,
    // has its features, equal to f32's within f16's effect.
    let ((code, _, err), f16s) = extract("f16");
    assert_eq!(code, 2, "{err}");
    assert_eq!(f16s.failed.len(), 1, "{:?}", f16s.failed);
    let (path, why) = &f16s.failed[0];
    assert!(path.ends_with("red.png"), "{path}");
    assert!(
        why.contains("f16") && why.contains("--precision f32"),
        "{why}"
    );
    assert!(f16s.x.iter().all(|v| v.is_finite()));
    // f32 holds both.
    let ((code, _, err), f32s) = extract("f32");
    assert_eq!(code, 0, "{err}");
    assert!(f32s.failed.is_empty());
    assert_eq!(f32s.paths.len(), 2);
    let blue = f32s
        .paths
        .iter()
        .position(|p| p.ends_with("blue.png"))
        .unwrap();
    let dd = f32s.d;
    let c = cosine(&f32s.x[blue * dd..(blue + 1) * dd], &f16s.x[..dd]);
    assert!(c >= 0.9999, "blue image: cosine {c}");
    // fit-pca leaves the red image out, saying why, and fits on the blue one.
    let (code, out, err) = run(&[
        "fit-pca",
        "--device",
        "gpu",
        "--precision",
        "f16",
        "--size",
        "96",
        "--weights",
        weights.to_str().unwrap(),
        "-o",
        d.0.join("pca.safetensors").to_str().unwrap(),
        images.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("red.png: an activation exceeded f16's range") && err.contains("(left out)"),
        "{err}"
    );
    assert!(!err.contains("blue.png"), "{err}");
    assert!(out.contains("local features"), "{out}");
    // Where f16 cannot run, the error says so.
    let (code, _, err) = run(&[
        "extract",
        "--device",
        "cpu",
        "--precision",
        "f16",
        "--weights",
        weights.to_str().unwrap(),
        "-o",
        d.0.join("cpu").to_str().unwrap(),
        images.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--precision f16 runs on a GPU"), "{err}");
}
