//! ResNet-50 and ResNet-101 from a weights file through every command, as a user runs them:
//! model-info, fit-pca, extract (CPU backend and GPU), index, search, train-classifier. Seeded
//! weights with batch norms (tests/common), in torchvision's names.

mod common;

use common::{safetensors_bytes, seeded_tensors_with, temp_dir};
use crosspool::classifier::data::FeatureSet;
use crosspool::model::Arch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn crosspool(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args(args)
        .output()
        .unwrap()
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new(&$a)),*] };
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Seeded weights of `arch` in `dir`, the architecture named in the metadata.
fn weights_file(dir: &Path, arch: Arch) -> PathBuf {
    let path = dir.join(format!("{arch}.safetensors"));
    let meta = std::collections::HashMap::from([("crosspool.arch".into(), arch.to_string())]);
    std::fs::write(
        &path,
        safetensors_bytes(&seeded_tensors_with(arch, false), Some(meta)),
    )
    .unwrap();
    path
}

fn ok(out: &Output) -> (String, String) {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{e}");
    (o, e)
}

/// model-info lists every layer with its shape, the shortcuts and the folded batch norms.
#[test]
fn model_info_lists_blocks_shortcuts_and_folded_batch_norms() {
    let d = temp_dir("resnet-info");
    for (arch, convs, blocks) in [(Arch::Resnet50, 53, 16), (Arch::Resnet101, 104, 33)] {
        let w = weights_file(&d.0, arch);
        let (out, _) = ok(&crosspool(args!["model-info", "--weights", w]));
        assert!(
            out.contains(&format!("folded into the {convs} convolutions")),
            "{out}"
        );
        let line = |name: &str| {
            out.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
                .to_string()
        };
        assert!(line("conv1").contains("112 x 112  x   64"), "{out}");
        assert!(line("maxpool").contains("56 x 56   x   64"), "{out}");
        assert!(
            line("layer1.0").contains("(+ layer1.0.downsample)"),
            "{out}"
        );
        assert!(line("layer1.1").contains("(+ layer1.0)"), "{out}");
        assert!(line("layer2.0.downsample").contains("(no ReLU)"), "{out}");
        assert!(line("layer4.2").contains("7 x 7    x 2048"), "{out}");
        let block_outputs = out.lines().filter(|l| l.contains("(+ layer")).count();
        assert_eq!(block_outputs, blocks, "{out}");
    }
}

/// A missing batch norm statistic, or a conv bias that torchvision's ResNet has not, is an
/// error that names the tensor.
#[test]
fn missing_or_unexpected_tensors_are_named() {
    let d = temp_dir("resnet-bad");
    let meta = || std::collections::HashMap::from([("crosspool.arch".into(), "resnet50".into())]);
    let mut tensors = seeded_tensors_with(Arch::Resnet50, false);
    tensors.retain(|t| t.0 != "layer3.1.bn2.running_var");
    let f = d.0.join("missing.safetensors");
    std::fs::write(&f, safetensors_bytes(&tensors, Some(meta()))).unwrap();
    let out = crosspool(args!["model-info", "--weights", f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("layer3.1.bn2.running_var")
            && err.contains("missing"),
        "{err}"
    );
    let mut tensors = seeded_tensors_with(Arch::Resnet50, false);
    tensors.push((
        "layer1.0.conv1.bias".into(),
        safetensors::Dtype::F32,
        vec![64],
        vec![0; 256],
    ));
    std::fs::write(&f, safetensors_bytes(&tensors, Some(meta()))).unwrap();
    let out = crosspool(args!["model-info", "--weights", f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("layer1.0.conv1.bias"),
        "{err}"
    );
}

/// The baselines pool any layer; FC-Conv pooling, which needs fully connected layers on a
/// grid, is refused with the reason.
#[test]
fn baselines_pool_any_layer_and_fc_conv_is_refused() {
    let d = temp_dir("resnet-pooling");
    let w = weights_file(&d.0, Arch::Resnet50);
    let photos = repo("tests/data/photos");
    for pooling in ["gram", "sum", "max"] {
        let out = d.0.join(pooling);
        ok(&crosspool(args![
            "extract",
            "-q",
            "--device",
            "cpu",
            "--size",
            "64",
            "--pooling",
            pooling,
            "--layers",
            "layer3.5",
            "--weights",
            w,
            "-o",
            out,
            photos
        ]));
        assert_eq!(FeatureSet::read(&out).unwrap().len(), 4, "{pooling}");
    }
    let out = crosspool(args![
        "extract",
        "-q",
        "--device",
        "cpu",
        "--size",
        "64",
        "--pooling",
        "fc-conv",
        "--weights",
        w,
        "-o",
        d.0.join("fc"),
        photos
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("global average pooling"),
        "{err}"
    );
}

/// fit-pca, extract on the CPU backend and on the GPU, index and search, with ResNet-50's
/// default layers (layer4.1 x layer4.2) and PCA of the local features; then a classifier on
/// labelled features of ResNet-101's inner layers.
#[test]
fn every_command_runs_on_resnet() {
    let d = temp_dir("resnet-e2e");
    let w = weights_file(&d.0, Arch::Resnet50);
    let photos = repo("tests/data/photos");
    let pca = d.0.join("pca.safetensors");
    ok(&crosspool(args![
        "fit-pca",
        "--device",
        "cpu",
        "--size",
        "96",
        "--dims",
        "16",
        "--weights",
        w,
        "-o",
        pca,
        photos
    ]));
    let extract = |device: &str, out: &Path| {
        ok(&crosspool(args![
            "extract",
            "-q",
            "--device",
            device,
            "--size",
            "96",
            "--batch",
            "3",
            "--pca",
            pca,
            "--weights",
            w,
            "-o",
            out,
            photos
        ]))
    };
    let (cpu_out, gpu_out) = (d.0.join("cpu"), d.0.join("gpu"));
    extract("cpu", &cpu_out);
    extract("gpu", &gpu_out);
    let cpu = FeatureSet::read(&cpu_out).unwrap();
    let gpu = FeatureSet::read(&gpu_out).unwrap();
    // 2048 channels of layer4.2, each pooling 16 PCA components of layer4.1.
    assert_eq!(cpu.d, 2048 * 16);
    // Every photo (PROVENANCE.md is not an image: the walk leaves it out).
    assert_eq!(cpu.len(), 4);
    assert_eq!(cpu.paths, gpu.paths);
    let e = common::rel_l2(&gpu.x, &cpu.x);
    assert!(e < 1e-4, "GPU and CPU backend features differ by {e:e}");

    let index = d.0.join("index");
    ok(&crosspool(args!["index", "--out", index, cpu_out]));
    let query = photos.join("coffee.jpg");
    let (out, _) = ok(&crosspool(args![
        "search", "--device", "cpu", "--json", "--index", index, "--query", query
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let top = v["results"][0]["path"].as_str().unwrap_or_default();
    assert!(top.ends_with("coffee.jpg"), "{out}");

    // ResNet-101, labelled folders, an inner convolution and a block output on one grid.
    let w101 = weights_file(&d.0, Arch::Resnet101);
    let train = d.0.join("train");
    for g in ["astronaut", "coffee", "rocket"] {
        std::fs::create_dir_all(train.join(g)).unwrap();
        for view in ["", "_crop", "_rotate"] {
            let name = format!("{g}{view}.jpg");
            let from = repo("tests/data/retrieval").join(&name);
            std::fs::copy(from, train.join(g).join(&name)).unwrap();
        }
    }
    let feats = d.0.join("feats101");
    ok(&crosspool(args![
        "extract",
        "-q",
        "--device",
        "cpu",
        "--size",
        "64",
        "--labels",
        "folder",
        "--layers",
        "layer3.22.conv2,layer3.22",
        "--weights",
        w101,
        "-o",
        feats,
        train
    ]));
    let (out, _) = ok(&crosspool(args![
        "train-classifier",
        "--folds",
        "3",
        "-o",
        d.0.join("svm.safetensors"),
        feats
    ]));
    assert!(out.contains("training accuracy"), "{out}");
}
