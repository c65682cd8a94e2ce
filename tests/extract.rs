//! `crosspool extract` end to end: sample photos, the odd and broken files, kill and resume,
//! parts of a job array, and agreement with the library's extractor.

mod common;

use common::{gpu, seeded_weights_file, temp_dir};
use crosspool::features::{FeatureSpec, Representation};
use crosspool::gpu::GpuTensor;
use crosspool::input::{prepare, DecodeOptions};
use crosspool::model::{Arch, ModelWeights};
use crosspool::pipeline::Extractor;
use crosspool::pooling::{Normalization, Quantization};
use crosspool::reference;
use crosspool::shape::Shape4;
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SIZE: usize = 99;

fn data(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(sub)
}

/// Seeded AlexNet weights (with their architecture in the metadata) in `dir`.
fn alexnet_weights(dir: &Path) -> PathBuf {
    let p = dir.join("alexnet.safetensors");
    let meta = HashMap::from([("crosspool.arch".to_string(), "alexnet".to_string())]);
    std::fs::write(&p, seeded_weights_file(Arch::Alexnet, Some(meta))).unwrap();
    p
}

/// `crosspool extract` on the GPU (software Vulkan included), unless `extra` names a
/// `--device`: these tests hold the command to the library's GPU pipeline.
fn extract(weights: &Path, out: &Path, extra: &[&str], inputs: &[&Path]) -> Output {
    let device: &[&str] = if extra.contains(&"--device") {
        &[]
    } else {
        &["--device", "gpu"]
    };
    Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args([
            "extract",
            "--quiet",
            "--size",
            &SIZE.to_string(),
            "--weights",
        ])
        .arg(weights)
        .args(device)
        .arg("--out")
        .arg(out)
        .args(extra)
        .args(inputs)
        .output()
        .unwrap()
}

/// Every manifest line of `dir`, by path.
fn manifest(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = v["path"].as_str().unwrap().to_string();
            assert!(
                out.insert(path.clone(), v).is_none(),
                "{path} recorded twice"
            );
        }
    }
    out
}

/// The stored feature of a manifest entry, as f32.
fn stored(dir: &Path, entry: &serde_json::Value) -> Vec<f32> {
    let bytes = std::fs::read(dir.join(entry["shard"].as_str().unwrap())).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st
        .tensor("features")
        .or_else(|_| st.tensor("codes"))
        .unwrap();
    let per: usize = t.shape()[1..].iter().product();
    let row = entry["row"].as_u64().unwrap() as usize;
    match t.dtype() {
        safetensors::Dtype::F32 => {
            bytemuck::pod_collect_to_vec::<u8, f32>(&t.data()[row * per * 4..(row + 1) * per * 4])
        }
        safetensors::Dtype::F16 => t.data()[row * per * 2..(row + 1) * per * 2]
            .chunks(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        safetensors::Dtype::U32 => {
            bytemuck::pod_collect_to_vec::<u8, u32>(&t.data()[row * per * 4..(row + 1) * per * 4])
                .into_iter()
                .map(|w| w as f32)
                .collect()
        }
        d => panic!("unexpected dtype {d:?}"),
    }
}

/// The library's features for `path` (one image), computed directly.
fn library_feature(weights: &Path, path: &Path) -> Vec<f32> {
    let ctx = gpu();
    let w = ModelWeights::load(weights, None, None).unwrap();
    let spec = FeatureSpec {
        repr: Representation::paper_default(Arch::Alexnet),
        norm: Normalization::PAPER,
    };
    let ex = Extractor::new(ctx, &w, spec, None).unwrap();
    let shape = Shape4::new(1, SIZE, SIZE, 3);
    // Decoded as `extract` decodes by default (fast: the photos are over twice SIZE).
    let x = prepare(path, SIZE as u32, &w.preprocess, DecodeOptions::default()).unwrap();
    let ws = ex.workspace(ctx, shape).unwrap();
    ex.extract(ctx, &GpuTensor::upload(ctx, &x, shape, "x").unwrap(), &ws)
        .unwrap()
        .download(ctx)
        .unwrap()
}

#[test]
fn photos_and_odd_files_give_features_or_recorded_failures() {
    let dir = temp_dir("odd");
    let weights = alexnet_weights(&dir.0);
    let out = dir.0.join("out");
    let missing = dir.0.join("missing.jpg");
    let list = dir.0.join("list.txt");
    std::fs::write(&list, format!("# a list file\n{}\n", missing.display())).unwrap();
    let r = extract(
        &weights,
        &out,
        &["--batch", "3", "--shard-rows", "4", "--json"],
        &[&data("photos"), &data("odd"), &list],
    );
    assert_eq!(
        r.status.code(),
        Some(2),
        "failures must give exit status 2: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let m = manifest(&out);
    let failed: Vec<&str> = m
        .iter()
        .filter(|(_, v)| v["status"] == "failed")
        .map(|(k, _)| k.rsplit('/').next().unwrap())
        .collect();
    let mut expect_failed = vec![
        "bomb.bmp",
        "corrupt.jpg",
        "empty.jpg",
        "missing.jpg",
        "not_an_image.png",
        "truncated.jpg",
    ];
    expect_failed.sort();
    let mut got_failed = failed.clone();
    got_failed.sort();
    assert_eq!(got_failed, expect_failed);
    assert!(m
        .values()
        .filter(|v| v["status"] == "failed")
        .all(|v| !v["reason"].as_str().unwrap().is_empty()));
    // 4 photos + 7 odd but readable images (grey, 16-bit, alpha, CMYK, palette, EXIF-rotated,
    // progressive); nothing dropped.
    assert_eq!(summary["ok"], 11);
    assert_eq!(summary["failed"], 6);
    assert_eq!(m.len(), 17);
    // The stored feature of a photo equals the library's, computed alone.
    let chelsea = data("photos").join("chelsea.jpg");
    let e = &m[&chelsea.display().to_string()];
    assert_eq!(stored(&out, e), library_feature(&weights, &chelsea));
    // And the .npy export holds every row.
    let npy = dir.0.join("all.npy");
    let st = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .arg("export-npy")
        .arg(&out)
        .arg("-o")
        .arg(&npy)
        .status()
        .unwrap();
    assert!(st.success());
    let len = std::fs::metadata(&npy).unwrap().len();
    assert!(
        len > 11 * 256 * 256 * 4 && len < 11 * 256 * 256 * 4 + 256,
        "npy of {len} bytes"
    );
}

#[test]
fn half_and_sign_formats_match_the_float_features() {
    let dir = temp_dir("formats");
    let weights = alexnet_weights(&dir.0);
    let photo = data("photos").join("coffee.jpg");
    let want = library_feature(&weights, &photo);
    for (format, check) in [("f16", 0u8), ("sign2", 1), ("bits1", 2)] {
        let out = dir.0.join(format);
        let r = extract(&weights, &out, &["--format", format], &[&photo]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let m = manifest(&out);
        let entry = &m[&photo.display().to_string()];
        let got = stored(&out, entry);
        // Cross-layer shards also keep the mean of every conv5 channel, for retrieval.
        let bytes = std::fs::read(out.join(entry["shard"].as_str().unwrap())).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let g = st.tensor("guide_mean").unwrap();
        assert_eq!(g.shape(), [1, 256]);
        let means: Vec<f32> = bytemuck::pod_collect_to_vec(g.data());
        assert!(means.iter().all(|&v| v >= 0.0) && means.iter().any(|&v| v > 0.0));
        match check {
            0 => {
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= w.abs() * 1e-3 + 1e-7, "f16 {g} vs {w}");
                }
            }
            _ => {
                let q = if check == 1 {
                    Quantization::Sign2
                } else {
                    Quantization::Bits1
                };
                let words: Vec<f32> = reference::quantize(&want, 256, q)
                    .into_iter()
                    .map(|w| w as f32)
                    .collect();
                assert_eq!(got, words, "{format}");
            }
        }
    }
}

/// Kill a run after its first shard, resume it, and compare with an uninterrupted run.
#[test]
fn killed_run_resumes_without_duplicates_or_losses() {
    let dir = temp_dir("resume");
    let weights = alexnet_weights(&dir.0);
    let images = dir.0.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let photos = ["astronaut", "chelsea", "coffee", "rocket"];
    for k in 0..40 {
        let src = data("photos").join(format!("{}.jpg", photos[k % 4]));
        std::fs::copy(src, images.join(format!("img{k:03}.jpg"))).unwrap();
    }
    let out = dir.0.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args([
            "extract",
            "--quiet",
            "--size",
            "195",
            "--batch",
            "1",
            "--shard-rows",
            "2",
            "--weights",
        ])
        .arg(&weights)
        .arg("--out")
        .arg(&out)
        .arg(&images)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !out.join("shard-00000.jsonl").exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "no shard after 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = manifest(&out).len();
    assert!(
        partial < 40,
        "the run finished before it could be killed; the test needs more images"
    );
    // Resuming with other settings is refused; without --resume the directory is refused.
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_crosspool"))
            .args(["extract", "--quiet", "--size", "195", "--weights"])
            .arg(&weights)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .arg(&images)
            .output()
            .unwrap()
    };
    let r = run(&["--resume", "--format", "f16"]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("other settings"));
    let r = run(&[]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("--resume"));

    let r = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args([
            "extract",
            "--quiet",
            "--json",
            "--resume",
            "--size",
            "195",
            "--batch",
            "4",
            "--weights",
        ])
        .arg(&weights)
        .arg("--out")
        .arg(&out)
        .arg(&images)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(summary["already_done"].as_u64().unwrap() as usize, partial);
    let resumed = manifest(&out);
    assert_eq!(resumed.len(), 40, "every image exactly once");

    // The same features as a run that was never interrupted.
    let clean = dir.0.join("clean");
    let r = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args([
            "extract",
            "--quiet",
            "--size",
            "195",
            "--batch",
            "8",
            "--weights",
        ])
        .arg(&weights)
        .arg("--out")
        .arg(&clean)
        .arg(&images)
        .output()
        .unwrap();
    assert!(r.status.success());
    let full = manifest(&clean);
    for (path, e) in &resumed {
        assert_eq!(stored(&out, e), stored(&clean, &full[path]), "{path}");
    }
}

#[test]
fn parts_of_a_job_array_cover_the_input_once() {
    let dir = temp_dir("parts");
    let weights = alexnet_weights(&dir.0);
    let out = dir.0.join("out");
    for part in ["0/3", "1/3", "2/3"] {
        let r = extract(&weights, &out, &["--shard", part], &[&data("photos")]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let m = manifest(&out);
    assert_eq!(m.len(), 4);
    assert!(m.values().all(|v| v["status"] == "ok"));
}

/// `--device cpu` stores what the library's CPU backend computes, bit for bit, and stays
/// within the f32 tolerance of the GPU's features (tests/features.rs).
#[test]
fn the_cpu_backend_extracts_the_same_features() {
    use crosspool::cpu::{CpuBackend, HostTensor};
    use crosspool::pipeline::Storage;
    let dir = temp_dir("cpu-device");
    let weights = alexnet_weights(&dir.0);
    let photos = data("photos");
    let (cpu_out, gpu_out) = (dir.0.join("cpu"), dir.0.join("gpu"));
    for (out, device) in [(&cpu_out, "cpu"), (&gpu_out, "gpu")] {
        let r = extract(&weights, out, &["--device", device, "--json"], &[&photos]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(summary["ok"], 4);
        let on_cpu = summary["device"]
            .as_str()
            .unwrap()
            .starts_with("CPU backend");
        assert_eq!(on_cpu, device == "cpu", "{summary}");
    }
    let (mc, mg) = (manifest(&cpu_out), manifest(&gpu_out));
    let chelsea = photos.join("chelsea.jpg").display().to_string();
    let w = ModelWeights::load(&weights, None, None).unwrap();
    let spec = FeatureSpec {
        repr: Representation::paper_default(Arch::Alexnet),
        norm: Normalization::PAPER,
    };
    let cpu = CpuBackend::new();
    let ex = Extractor::new(&cpu, &w, spec, None).unwrap();
    let shape = Shape4::new(1, SIZE, SIZE, 3);
    let x = prepare(
        Path::new(&chelsea),
        SIZE as u32,
        &w.preprocess,
        DecodeOptions::default(),
    )
    .unwrap();
    let ws = ex.workspace(&cpu, shape).unwrap();
    let t = HostTensor::from_values(x, shape).unwrap();
    let want = cpu.download(ex.extract(&cpu, &t, &ws).unwrap()).unwrap();
    assert_eq!(stored(&cpu_out, &mc[&chelsea]), want);
    for (path, e) in &mc {
        let (c, g) = (stored(&cpu_out, e), stored(&gpu_out, &mg[path]));
        let sq = |v: &[f32]| v.iter().map(|x| x * x.abs()).collect::<Vec<f32>>();
        let err = common::rel_l2(&sq(&c), &sq(&g));
        assert!(err <= 1e-5, "{path}: CPU vs GPU rel err {err:e}");
    }
}
