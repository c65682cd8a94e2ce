//! The command-line tool, run as a user would.

mod common;

use common::{seeded_weights_file, temp_dir};
use crosspool::model::Arch;
use crosspool::pca::Pca;
use std::path::{Path, PathBuf};
use std::process::Command;

fn crosspool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crosspool"))
}

fn photos() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos")
}

/// Seeded AlexNet weights (with the fully connected layers when `fc`) written to
/// `dir/alexnet.safetensors`, the architecture named in the metadata.
fn alexnet_file(dir: &Path, fc: bool) -> PathBuf {
    let weights = dir.join("alexnet.safetensors");
    let tensors = common::seeded_tensors_with(Arch::Alexnet, fc);
    std::fs::write(
        &weights,
        common::safetensors_bytes(&tensors, Some(alexnet_meta())),
    )
    .unwrap();
    weights
}

fn alexnet_meta() -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([("crosspool.arch".to_string(), "alexnet".to_string())])
}

#[test]
fn info_names_the_adapter_and_the_cpu_backend() {
    let out = crosspool()
        .args(["info", "--require-gpu"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("adapter:") && text.contains("max storage binding size"),
        "{text}"
    );
    assert!(
        text.contains("CPU backend") && text.contains("threads:") && text.contains("conv:"),
        "{text}"
    );
    assert!(text.contains("--device auto runs on: "), "{text}");
    // Which path each --precision takes: software Vulkan has shader-f16, and auto stays f32
    // there (f16 storage gains nothing on a CPU).
    assert!(
        text.contains("  f16   f16 storage, f32 sums on the scalar kernels (this adapter lacks cooperative matrices")
            && text.contains("  auto  f32 storage"),
        "{text}"
    );
    // Every adapter with its index; --adapter takes the index and opens that adapter.
    let out = crosspool().args(["info", "--list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{list}");
    let first = list.lines().next().unwrap_or_default();
    let (index, rest) = first.trim_start().split_once("  ").unwrap();
    assert_eq!(index, "0", "{list}");
    let name = rest.split("  (").next().unwrap();
    let out = crosspool()
        .args(["--adapter", "0", "info", "--require-gpu"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains(&format!("adapter:    {name}")),
        "{shown}"
    );
    let count = list.lines().count();
    let out = crosspool()
        .args(["--adapter", &count.to_string(), "info", "--require-gpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!("with index {count}"))
            && err.contains("0: "),
        "{err}"
    );
    // A bad kernel name is refused with the accepted ones.
    let out = crosspool()
        .arg("info")
        .env("CROSSPOOL_CPU_CONV", "fast")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auto, winograd, direct"), "{err}");
}

#[test]
fn fit_pca_on_photos_writes_a_loadable_pca() {
    let tmp = temp_dir("pca");
    let dir = &tmp.0;
    let weights = alexnet_file(dir, false);
    let out_file = dir.join("pca.safetensors");
    let out = crosspool()
        .args([
            "fit-pca",
            "--size",
            "99",
            "--batch",
            "3",
            "--dims",
            "32",
            "--weights",
        ])
        .arg(&weights)
        .arg("-o")
        .arg(&out_file)
        .arg(photos())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pca = Pca::load(&out_file).unwrap();
    assert_eq!(
        (pca.layer.as_str(), pca.dims, pca.feature_len()),
        ("conv4", 32, 256)
    );
    // 4 photos, conv4 at 5x5 for a 99x99 input.
    assert_eq!(pca.units, 4 * 25);
    assert!(String::from_utf8_lossy(&out.stderr).contains("4/4 images"));
}

#[test]
fn bad_inputs_fail_with_the_reason() {
    let tmp = temp_dir("bad");
    let dir = &tmp.0;
    let not_image = dir.join("notes.jpg");
    std::fs::write(&not_image, b"this is not a JPEG").unwrap();
    let weights = dir.join("w.safetensors");
    std::fs::write(&weights, seeded_weights_file(Arch::Alexnet, None)).unwrap();
    let run = |args: &[&str], extra: &[&Path]| {
        let out = crosspool().args(args).args(extra).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(
        &[
            "fit-pca",
            "--model",
            "alexnet",
            "-o",
            "/tmp/never",
            "--weights",
        ],
        &[&weights, &not_image],
    );
    // An unreadable image is reported and left out; with none left, there is nothing to fit.
    assert!(
        e.contains("notes.jpg")
            && e.contains("not an image format")
            && e.contains("none of the 1 images could be read"),
        "{e}"
    );
    let e = run(
        &["fit-pca", "-o", "/tmp/never", "--weights"],
        &[&weights, &not_image],
    );
    assert!(e.contains("does not say which network"), "{e}");
    let e = run(&["model-info", "--weights"], &[&not_image]);
    assert!(e.contains("not a readable safetensors file"), "{e}");
    let e = run(
        &["fit-pca", "--window", "2x2", "-o", "x", "--weights"],
        &[&weights, &not_image],
    );
    assert!(e.contains("odd"), "{e}");
}

/// fit-pca reads list files like extract does, and leaves out (reporting) what it cannot
/// read instead of stopping.
#[test]
fn fit_pca_takes_list_files_and_leaves_out_unreadable_images() {
    let d = temp_dir("fit-pca-list");
    let dir = &d.0;
    let weights = dir.join("w.safetensors");
    std::fs::write(&weights, seeded_weights_file(Arch::Alexnet, None)).unwrap();
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    let list = dir.join("train.txt");
    std::fs::write(
        &list,
        format!(
            "# training images\n{}\n{}\n\n{}\n",
            photos.join("rocket.jpg").display(),
            dir.join("missing.jpg").display(),
            photos.join("coffee.jpg").display()
        ),
    )
    .unwrap();
    let out = dir.join("pca.safetensors");
    let r = crosspool()
        .args([
            "fit-pca", "--model", "alexnet", "--size", "67", "--batch", "2", "-o",
        ])
        .arg(&out)
        .arg("--weights")
        .arg(&weights)
        .arg(&list)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("on 3 images"), "{err}");
    assert!(
        err.contains("missing.jpg") && err.contains("left out"),
        "{err}"
    );
    let pca = Pca::load(&out).unwrap();
    // Two readable 67x67 images: AlexNet's conv4 grid is 3x3, so 18 local features.
    assert_eq!(pca.units, 18);
}

/// Command lines crosspool does not accept exit with 64, apart from 1 (the run stopped) and 2
/// (some inputs failed); help exits with 0. Sizes too small for the network say so in the
/// user's terms.
#[test]
fn usage_errors_have_their_own_exit_status() {
    let status = |args: &[&str]| {
        let out = crosspool().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        &[
            "extract",
            "--window",
            "2x2",
            "--weights",
            "w",
            "--out",
            "o",
            "i.jpg",
        ][..],
        &[
            "extract",
            "--shard",
            "3/2",
            "--weights",
            "w",
            "--out",
            "o",
            "i.jpg",
        ],
        &[
            "extract",
            "--shard",
            "0/0",
            "--weights",
            "w",
            "--out",
            "o",
            "i.jpg",
        ],
        &["search", "-k", "0", "--index", "x", "--query", "q.jpg"],
        &["extract", "--no-such-flag"],
    ] {
        let (code, err) = status(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
    }
    assert_eq!(status(&["--help"]).0, Some(0));

    let d = temp_dir("too-small");
    let weights = d.0.join("w.safetensors");
    std::fs::write(&weights, seeded_weights_file(Arch::Alexnet, None)).unwrap();
    let min = Arch::Alexnet.min_input_size("conv5").unwrap();
    let small = (min - 1).to_string();
    let w = weights.display().to_string();
    let out = d.0.join("o").display().to_string();
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos/rocket.jpg");
    let photo = photo.display().to_string();
    let (code, err) = status(&[
        "extract",
        "--model",
        "alexnet",
        "--size",
        &small,
        "--weights",
        &w,
        "--out",
        &out,
        &photo,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("the smallest input is {min}x{min}")),
        "{err}"
    );
    // The smallest size itself runs.
    let (code, err) = status(&[
        "extract",
        "--quiet",
        "--model",
        "alexnet",
        "--size",
        &min.to_string(),
        "--weights",
        &w,
        "--out",
        &out,
        &photo,
    ]);
    assert_eq!(code, Some(0), "{err}");
}

/// `bench --decode-only` times the input path alone: every image of --images decoded,
/// resized and preprocessed, on all cores and on one; it needs --images.
#[test]
fn bench_times_decoding_alone() {
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    let out = crosspool()
        .args([
            "bench",
            "--decode-only",
            "--iters",
            "1",
            "--json",
            "--images",
        ])
        .arg(&photos)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["images"], 4);
    for k in [
        "decode_images_per_second",
        "decode_images_per_second_one_core",
    ] {
        assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {r}");
    }
    let out = crosspool()
        .args(["bench", "--decode-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// `bench --devices` and `--in-flight` time streams of batches together after one batch at a
/// time: a rate per device, and a combined rate that is the images of all over the time
/// until the last stream finished.
#[test]
fn bench_times_several_devices_and_batches_in_flight() {
    let bench = |extra: &[&str]| {
        crosspool()
            .args([
                "bench", "--model", "alexnet", "--size", "64", "--batch", "2",
            ])
            .args(["--iters", "2", "--warmup", "1", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let overlapped = |extra: &[&str], devices: usize, in_flight: u64| {
        let out = bench(extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let g = r["overlapped"].clone();
        assert_eq!(g["in_flight"].as_u64(), Some(in_flight), "{r}");
        let rates: Vec<f64> = g["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["images_per_second"].as_f64().unwrap())
            .collect();
        assert_eq!(rates.len(), devices, "{r}");
        let combined = g["images_per_second"].as_f64().unwrap();
        let sum: f64 = rates.iter().sum();
        let min = rates.iter().cloned().fold(f64::MAX, f64::min);
        // The wall time is at least each stream's time, and the starts are held together.
        assert!(
            combined <= sum * 1.0001 && combined >= 0.8 * devices as f64 * min,
            "{r}"
        );
        let one = r["images_per_second"].as_f64().unwrap();
        let scaling = g["scaling_over_one"].as_f64().unwrap();
        assert!((scaling - combined / one).abs() < 1e-9 * scaling, "{r}");
    };
    overlapped(&["--devices", "0,0", "--in-flight", "1"], 2, 1);
    // On one GPU, two batches in flight by default.
    overlapped(&[], 1, 2);
    let out = bench(&["--devices", "7"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("GPU 7 of --devices"),
        "{err}"
    );
    let out = bench(&["--in-flight", "1"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.get("overlapped").is_none(), "{r}");
}

/// `fit-pca --device cpu` fits what the GPU fits: the same mean and eigenvalues within the f32
/// tolerance of the moments, and the leading components (well separated eigenvalues) the same
/// directions.
#[test]
fn fit_pca_on_the_cpu_backend_and_on_two_devices_matches_one_gpu() {
    let tmp = temp_dir("pca-devices");
    let dir = &tmp.0;
    let weights = alexnet_file(dir, false);
    let fit = |name: &str, how: &[&str]| {
        let out_file = dir.join(format!("pca-{name}.safetensors"));
        let out = crosspool()
            .args(["fit-pca", "--size", "99"])
            .args(how)
            .arg("--weights")
            .arg(&weights)
            .arg("-o")
            .arg(&out_file)
            .arg(photos())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(log.contains("CPU backend"), name == "cpu", "{log}");
        // All 256 components from 4 x 25 local features: most carry no variance.
        assert!(
            log.contains("span at most 99 dimensions, so 157 of the 256 components"),
            "{log}"
        );
        Pca::load(&out_file).unwrap()
    };
    let device = |d: &'static str| ["--device", d];
    let (cpu, gpu) = (fit("cpu", &device("cpu")), fit("gpu", &device("gpu")));
    assert_eq!(cpu.units, gpu.units);
    assert!(common::rel_l2(&cpu.mean, &gpu.mean) <= 1e-5);
    assert!(common::rel_l2(&cpu.eigenvalues, &gpu.eigenvalues) <= 1e-5);
    let f = cpu.feature_len();
    for k in 0..4 {
        let (a, b) = (&cpu.components[k * f..][..f], &gpu.components[k * f..][..f]);
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(dot > 0.999, "component {k}: dot {dot}");
    }
    // Two devices (twice the one adapter here), a batch each in turn, their f64 sums added in
    // device order: the same f32 batch sums as one device, added in another order, so each
    // stored f32 value is within an ulp or two of the one-device fit.
    let one = fit("one", &["--device", "gpu", "--batch", "1"]);
    let two = fit("two", &["--devices", "0,0", "--batch", "1"]);
    assert_eq!(one.units, two.units);
    let ulps = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / x.abs().max(f32::MIN_POSITIVE) / f32::EPSILON)
            .fold(0f32, f32::max)
    };
    let (m, e) = (
        ulps(&one.mean, &two.mean),
        ulps(&one.eigenvalues[..8], &two.eigenvalues[..8]),
    );
    eprintln!("fit-pca on two devices: mean within {m} ulp, top eigenvalues within {e} ulp");
    assert!(m <= 2.0 && e <= 2.0, "{m} {e}");
}

#[test]
fn pooling_variants_from_the_command_line() {
    let tmp = temp_dir("variants");
    let dir = &tmp.0;
    let weights = alexnet_file(dir, true);
    let extract = |name: &str, args: &[&str]| {
        let out_dir = dir.join(name);
        let out = crosspool()
            .args(["extract", "-q", "--size", "287", "--weights"])
            .arg(&weights)
            .args(args)
            .arg("-o")
            .arg(&out_dir)
            .arg(photos())
            .output()
            .unwrap();
        let settings = std::fs::read_to_string(out_dir.join("extract.json")).ok();
        (
            out,
            settings.map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap()),
        )
    };
    // FC-FC (here without a PCA), FC-Conv with its default layers, max channel pooling: at
    // 287x287 the fc layers run over a 3x3 grid.
    for (name, args, layers, rows, cols) in [
        (
            "fc-fc",
            vec!["--layers", "fc6,fc8"],
            ["fc6", "fc8"],
            1000,
            4096,
        ),
        (
            "fc-conv",
            vec!["--pooling", "fc-conv"],
            ["conv5", "fc6"],
            4096,
            256,
        ),
        (
            "max",
            vec!["--channel-pooling", "max"],
            ["conv4", "conv5"],
            256,
            256,
        ),
    ] {
        let (out, settings) = extract(name, &args);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = settings.unwrap();
        assert_eq!(s["layers"], serde_json::json!(layers), "{name}");
        assert_eq!(
            (s["feature_rows"].clone(), s["feature_cols"].clone()),
            (rows.into(), cols.into()),
            "{name}"
        );
        assert_eq!(s.get("channel_pooling").is_some(), name == "max", "{name}");
    }
    // Resuming the max run with sum pooling is refused, naming the difference.
    let (out, _) = extract("max", &["--resume"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("channel_pooling"),
        "{err}"
    );
    // Mistakes are named.
    let (out, _) = extract("bad1", &["--pooling", "sum", "--channel-pooling", "max"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("--channel-pooling"),
        "{err}"
    );
    let (out, _) = extract("bad2", &["--layers", "conv5,fc6"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("fc-conv"), "{err}");
}

/// Runs crosspool with `args`; returns (exit code, stdout, stderr).
fn run_crosspool(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = crosspool().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

macro_rules! os_args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new(&$a)),*] };
}

#[test]
fn classifiers_from_labelled_images() {
    let tmp = temp_dir("classify");
    let dir = &tmp.0;
    let weights = alexnet_file(dir, false);
    let w = weights.display().to_string();
    // Training images in ImageFolder layout (three views of each retrieval group); the
    // degraded views are the test set, labelled by a CSV, with one unreadable image.
    let retrieval = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/retrieval");
    let groups = [
        "astronaut",
        "camera",
        "chelsea",
        "coffee",
        "coins",
        "rocket",
    ];
    let (train, test) = (dir.join("train"), dir.join("test"));
    std::fs::create_dir_all(&test).unwrap();
    let mut csv = String::from("path,label\n");
    for g in groups {
        std::fs::create_dir_all(train.join(g)).unwrap();
        for view in ["", "_crop", "_rotate"] {
            let name = format!("{g}{view}.jpg");
            std::fs::copy(retrieval.join(&name), train.join(g).join(&name)).unwrap();
        }
        let name = format!("{g}_degrade.jpg");
        std::fs::copy(retrieval.join(&name), test.join(&name)).unwrap();
        csv += &format!("test/{name},{g}\n");
    }
    std::fs::write(test.join("broken.jpg"), b"not a jpeg").unwrap();
    csv += "test/broken.jpg,coins\n";
    let labels = dir.join("labels.csv");
    std::fs::write(&labels, &csv).unwrap();
    let extract = |inputs: &Path, labels: Option<&Path>, size: &str, out: &str| {
        let out_dir = dir.join(out);
        let mut args = vec![
            "extract".into(),
            "-q".into(),
            "--size".into(),
            size.into(),
            "--weights".into(),
            w.clone(),
            "-o".into(),
            out_dir.display().to_string(),
        ];
        if let Some(l) = labels {
            args.extend(["--labels".into(), l.display().to_string()]);
        }
        args.push(inputs.display().to_string());
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        (run_crosspool(&args), out_dir)
    };

    let ((code, _, err), train_feats) = extract(&train, Some(Path::new("folder")), "160", "tr");
    assert_eq!(code, 0, "{err}");
    let manifest = std::fs::read_to_string(train_feats.join("shard-00000.jsonl")).unwrap();
    for line in manifest.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let path = v["path"].as_str().unwrap();
        let label = v["label"].as_str().unwrap();
        assert!(path.contains(&format!("/{label}/")), "{line}");
    }
    let ((code, _, err), test_feats) = extract(&dir.clone(), Some(&labels), "160", "te");
    // The folder holds more images than the CSV labels: refused before any work.
    assert!(code == 1 && err.contains("have no label"), "{code} {err}");
    assert!(!test_feats.join("extract.json").exists());
    let ((code, _, err), test_feats) = extract(&test, Some(&labels), "160", "te");
    assert_eq!(code, 2, "the broken image fails: {err}");

    // The SVM, C by cross-validation: every C of the grid is reported.
    let svm = dir.join("svm.safetensors");
    let (code, out, err) = run_crosspool(os_args![
        "train-classifier",
        train_feats,
        "--folds",
        "3",
        "-o",
        svm
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("cross-validated accuracy").count(), 11, "{err}");
    assert!(err.contains("18 images of 6 classes"), "{err}");
    let train_accuracy: f64 = out
        .split("training accuracy ")
        .nth(1)
        .and_then(|s| s.trim().trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // evaluate on the training features reproduces that accuracy.
    let (code, out, err) = run_crosspool(os_args![
        "evaluate",
        "--classifier",
        svm,
        train_feats,
        "--json"
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!((v["accuracy"].as_f64().unwrap() * 100.0 - train_accuracy).abs() < 0.006);

    // On the test set: the confusion matrix, accuracy and per-class accuracy agree with
    // each other and with classify's predictions.
    let png = dir.join("confusion.png");
    let (code, out, err) = run_crosspool(os_args![
        "evaluate",
        "--classifier",
        svm,
        test_feats,
        "--json",
        "--confusion",
        png
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"], 6);
    assert_eq!(v["failed_in_extraction"], 1);
    let cm: Vec<Vec<u64>> = serde_json::from_value(v["confusion"].clone()).unwrap();
    let trace: u64 = (0..cm.len()).map(|i| cm[i][i]).sum();
    let total: u64 = cm.iter().flatten().sum();
    assert_eq!(total, 6);
    assert_eq!(v["accuracy"].as_f64().unwrap(), trace as f64 / 6.0);
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (6 * 24 + 1, 6 * 24 + 1));
    let classes: Vec<String> = serde_json::from_value(v["classes"].clone()).unwrap();
    assert_eq!(classes, groups);

    let preds = dir.join("preds.jsonl");
    let (code, _, err) = run_crosspool(os_args![
        "classify",
        "--classifier",
        svm,
        test_feats,
        "-o",
        preds
    ]);
    assert_eq!(code, 2, "the broken image has no prediction: {err}");
    let from_features = std::fs::read_to_string(&preds).unwrap();
    let lines: Vec<serde_json::Value> = from_features
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    let right = lines
        .iter()
        .filter(|l| {
            l["class"].as_str().is_some_and(|c| {
                l["path"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("{c}_degrade.jpg"))
            })
        })
        .count() as u64;
    assert_eq!(right, trace);
    assert!(lines
        .iter()
        .any(|l| l["path"].as_str().unwrap().ends_with("broken.jpg") && l["error"].is_string()));
    // classify on the images themselves extracts them with the classifier's settings: the
    // same predictions, the same scores.
    let (code, from_images, err) =
        run_crosspool(os_args!["classify", "-q", "--classifier", svm, test]);
    assert_eq!(code, 2, "{err}");
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&from_images), sorted(&from_features));

    // Logistic regression with a fixed C.
    let lr = dir.join("lr.safetensors");
    let (code, out, err) = run_crosspool(os_args![
        "train-classifier",
        train_feats,
        "--model",
        "logistic",
        "--c",
        "10",
        "-o",
        lr
    ]);
    assert!(
        code == 0 && out.contains("logistic with C 10"),
        "{out} {err}"
    );
    let (code, out, err) = run_crosspool(os_args!["evaluate", "--classifier", lr, test_feats]);
    assert!(
        code == 0 && out.contains("6 images: accuracy") && out.contains("1 images failed"),
        "{out} {err}"
    );

    // Mistakes are named.
    let bad = |args: &[&std::ffi::OsStr], why: &str| {
        let (code, _, err) = run_crosspool(args);
        assert!(code == 1 && err.contains(why), "{why}: {code} {err}");
    };
    let ((code, _, err), unlabelled) = extract(&test, None, "160", "unlabelled");
    assert_eq!(code, 2, "{err}");
    bad(
        os_args!["train-classifier", unlabelled, "-o", dir.join("x")],
        "has no label in its manifest",
    );
    let ((code, _, err), one_class) = extract(
        &train.join("coins"),
        Some(Path::new("folder")),
        "160",
        "one",
    );
    assert_eq!(code, 0, "{err}");
    bad(
        os_args!["train-classifier", one_class, "-o", dir.join("x")],
        "one class only ('coins')",
    );
    let zebra = dir.join("zebra.csv");
    std::fs::write(&zebra, csv.replace(",rocket", ",zebra")).unwrap();
    let ((code, _, err), zebra_feats) = extract(&test, Some(&zebra), "160", "zebra");
    assert_eq!(code, 2, "{err}");
    bad(
        os_args!["evaluate", "--classifier", svm, zebra_feats],
        "class 'zebra' is not one the classifier knows",
    );
    let ((code, _, err), other_size) = extract(&test, Some(&labels), "192", "size");
    assert_eq!(code, 2, "{err}");
    bad(
        os_args!["evaluate", "--classifier", svm, other_size],
        "size",
    );
    let missing = dir.join("missing.csv");
    std::fs::write(
        &missing,
        "test/astronaut_degrade.jpg,astronaut\ntest/nope.jpg,coins\n",
    )
    .unwrap();
    let ((code, _, err), _) = extract(&test, Some(&missing), "160", "missing");
    assert!(
        code == 1 && err.contains("missing.csv:2") && err.contains("nope.jpg"),
        "{err}"
    );
}

#[test]
fn aconv_from_the_command_line() {
    let tmp = temp_dir("aconv");
    let dir = &tmp.0;
    let weights = alexnet_file(dir, true);
    // Three classes of the scene set, five images each.
    let scenes = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/scenes/train");
    let classes = ["Aqua", "Kite", "Path"];
    let dirs: Vec<PathBuf> = classes.iter().map(|c| scenes.join(c)).collect();
    let ac = dir.join("layer.aconv");
    let mut args: Vec<std::ffi::OsString> = [
        "train-aconv",
        "--labels",
        "folder",
        "--size",
        "287",
        "--filters",
        "8",
        "--epochs",
        "3",
        "--weights",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push(weights.clone().into());
    // The added layer's forward pass on the GPU (software Vulkan in CI); the CPU path is
    // what `extract` below and the unit tests run.
    args.extend(["--device".into(), "gpu".into()]);
    args.extend(["-o".into(), ac.clone().into()]);
    args.extend(dirs.iter().map(|d| d.clone().into()));
    let out = crosspool().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("15 images of 3 classes"), "{err}");
    assert_eq!(err.matches("training accuracy").count(), 3, "{err}");
    assert!(
        err.contains("8 filters on 9 positions of 4096 channels"),
        "{err}"
    );

    // Its activations guide the pooling of fc6: 8 rows of 4096.
    let feats = dir.join("feats");
    let out = crosspool()
        .args([
            "extract",
            "-q",
            "--size",
            "287",
            "--labels",
            "folder",
            "--weights",
        ])
        .arg(&weights)
        .arg("--aconv")
        .arg(&ac)
        .arg("-o")
        .arg(&feats)
        .args(&dirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(feats.join("extract.json")).unwrap())
            .unwrap();
    assert_eq!(s["layers"], serde_json::json!(["fc6", "aconv"]));
    assert_eq!(
        (s["feature_rows"].clone(), s["feature_cols"].clone()),
        (8.into(), 4096.into())
    );
    assert!(s["aconv"].as_str().unwrap().ends_with("layer.aconv"));
    // A classifier on them, and classify on the images, which extracts with the layer.
    let clf = dir.join("clf");
    let out = crosspool()
        .args(["train-classifier", "--c", "1", "-o"])
        .arg(&clf)
        .arg(&feats)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crosspool()
        .args(["classify", "-q", "--classifier"])
        .arg(&clf)
        .arg(&dirs[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);

    // Mistakes are named: one class; the layer with other weights; --layers fc6,aconv alone.
    let one = crosspool()
        .args([
            "train-aconv",
            "--labels",
            "folder",
            "--size",
            "287",
            "--weights",
        ])
        .arg(&weights)
        .arg("-o")
        .arg(dir.join("x"))
        .arg(&dirs[0])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&one.stderr);
    assert!(
        !one.status.success() && err.contains("one class only ('Aqua')"),
        "{err}"
    );
    let other = dir.join("other.safetensors");
    let mut meta = alexnet_meta();
    meta.insert("note".into(), "another file".into());
    let tensors = common::seeded_tensors_with(Arch::Alexnet, true);
    std::fs::write(&other, common::safetensors_bytes(&tensors, Some(meta))).unwrap();
    for (w, extra, why) in [
        (
            &other,
            vec!["--aconv", ac.to_str().unwrap()],
            "other weights",
        ),
        (&weights, vec!["--layers", "fc6,aconv"], "--aconv FILE"),
    ] {
        let out = crosspool()
            .args(["extract", "-q", "--size", "287", "--weights"])
            .arg(w)
            .args(&extra)
            .arg("-o")
            .arg(dir.join("bad"))
            .arg(&dirs[0])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{why}: {err}");
    }
}

#[test]
fn extract_on_several_devices_gives_the_rows_of_one() {
    use crosspool::classifier::data::FeatureSet;
    let tmp = temp_dir("devices");
    let dir = &tmp.0;
    let weights = alexnet_file(dir, false);
    // The retrieval photos and an unreadable file, in batches of 2: 20 batches that two
    // devices (here two devices on software Vulkan's one adapter) take turns with.
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let retrieval = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/retrieval");
    for e in std::fs::read_dir(&retrieval).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jpg") {
            std::fs::copy(&p, images.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(images.join("broken.jpg"), b"not a jpeg").unwrap();
    let extract = |name: &str, how: &[&str]| {
        let out_dir = dir.join(name);
        let out = crosspool()
            .args([
                "extract",
                "-q",
                "--size",
                "160",
                "--batch",
                "2",
                "--weights",
            ])
            .arg(&weights)
            .args(how)
            .arg("-o")
            .arg(&out_dir)
            .arg(&images)
            .output()
            .unwrap();
        (out, out_dir)
    };
    // One batch at a time on one GPU: the reference.
    let (one, one_dir) = extract("one", &["--device", "gpu", "--in-flight", "1"]);
    assert_eq!(
        one.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let (two, two_dir) = extract("two", &["--devices", "0,0"]);
    assert_eq!(
        two.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );
    let (a, b) = (
        FeatureSet::read(&one_dir).unwrap(),
        FeatureSet::read(&two_dir).unwrap(),
    );
    assert_eq!(a.len(), 37);
    assert_eq!(a.paths, b.paths);
    assert_eq!(a.failed, b.failed);
    assert_eq!(a.failed.len(), 1);
    assert!(a
        .x
        .iter()
        .zip(&b.x)
        .all(|(p, q)| p.to_bits() == q.to_bits()));
    assert_eq!(a.x.len(), b.x.len());
    let manifest = |d: &Path| std::fs::read_to_string(d.join("shard-00000.jsonl")).unwrap();
    assert_eq!(manifest(&one_dir), manifest(&two_dir));
    // Three batches in flight on one GPU (one context, three sets of buffers) give the same.
    let (three, three_dir) = extract("three", &["--device", "gpu", "--in-flight", "3"]);
    assert_eq!(three.status.code(), Some(2));
    let c = FeatureSet::read(&three_dir).unwrap();
    assert_eq!((&a.paths, &a.failed), (&c.paths, &c.failed));
    assert!(a
        .x
        .iter()
        .zip(&c.x)
        .all(|(p, q)| p.to_bits() == q.to_bits()));
    assert_eq!(manifest(&one_dir), manifest(&three_dir));
    // Mistakes are named.
    for (how, why, code) in [
        (vec!["--devices", "9"], "GPU 9 of --devices", 1),
        (
            vec!["--in-flight", "0"],
            "'0' is not a whole number of at least 1",
            64,
        ),
        (vec!["--devices", "0", "--device", "cpu"], "--device cpu", 1),
        (
            vec!["--devices", "first"],
            "adapter indices such as 0,2,3",
            64,
        ),
    ] {
        let (out, _) = extract("bad", &how);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(code) && err.contains(why),
            "{how:?}: {err}"
        );
    }
}

/// `crosspool info | head -1`: a reader that closes the pipe early ends the program as
/// SIGPIPE ends other tools, without a panic on stderr.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = crosspool()
        .args(["info", "--list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}
