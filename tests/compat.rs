//! What earlier versions wrote still reads: the output directories and indexes that crosspool
//! 0.1.0 wrote (settings and index format version 1, `tests/data/compat/v1`, see its
//! PROVENANCE.md) load, index, evaluate and resume with this version; settings from a newer
//! version are refused with a message that says so.

mod common;

use common::temp_dir;
use crosspool::features::{NormPreset, Pooling};
use crosspool::model::Arch;
use crosspool::pooling::{LocalWindow, Quantization};
use crosspool::retrieval::{IndexData, RetrievalIndex, Storage};
use crosspool::store::settings::SETTINGS_VERSION;
use crosspool::store::ExtractSettings;
use std::path::{Path, PathBuf};
use std::process::Command;

fn v1(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/compat/v1")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn version_one_indexes_load_as_they_were_written() {
    let codes = RetrievalIndex::load(&v1("codes-index")).unwrap();
    assert_eq!(
        codes.paths,
        [
            "tests/data/photos/chelsea.jpg",
            "tests/data/photos/coffee.jpg"
        ]
    );
    assert_eq!((codes.rows, codes.cols), (512, 512));
    assert!(matches!(
        codes.data,
        IndexData::Codes {
            format: Quantization::Bits1,
            words_per_row: 16,
            ..
        }
    ));
    assert_eq!(codes.guide_mean.as_ref().map(Vec::len), Some(2 * 512));
    let s = &codes.settings;
    assert_eq!(s.version, 1);
    assert_eq!(
        (
            s.arch,
            s.pooling,
            s.norm,
            s.window,
            s.size,
            s.pca.as_deref()
        ),
        (
            Arch::Vgg16,
            Pooling::CrossLayer,
            NormPreset::Retrieval,
            LocalWindow::UNIT,
            32,
            None
        )
    );
    assert_eq!(s.layers, ["conv5_2", "conv5_3"]);
    assert_eq!(
        s.spec().unwrap().repr.to_string(),
        "cross-layer conv5_2 x conv5_3, 1x1"
    );

    let spoc = RetrievalIndex::load(&v1("spoc-index")).unwrap();
    assert_eq!((spoc.rows, spoc.cols), (1, 512));
    assert!(matches!(spoc.data, IndexData::Floats(ref v) if v.len() == 2 * 512));
    assert_eq!(spoc.settings.pooling, Pooling::Sum);
    assert!(spoc.guide_mean.is_none());
}

#[test]
fn version_one_extractions_index_to_what_version_one_indexed() {
    for (shards, index) in [("codes", "codes-index"), ("spoc", "spoc-index")] {
        let old = RetrievalIndex::load(&v1(index)).unwrap();
        let (new, stats) = RetrievalIndex::build(&v1(shards), Storage::Auto).unwrap();
        assert_eq!((stats.images, stats.failed, stats.shards), (2, 0, 1));
        assert_eq!(new, old, "{shards}");
    }
}

#[test]
fn saved_indexes_are_version_two_and_round_trip() {
    let old = RetrievalIndex::load(&v1("codes-index")).unwrap();
    let d = temp_dir("compat-save");
    old.save(&d.0).unwrap();
    let bytes = std::fs::read(d.0.join("index.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["crosspool.index.version"], "2");
    assert_eq!(meta["crosspool.index.kind"], "bits1");
    let settings: serde_json::Value = serde_json::from_str(&meta["crosspool.settings"]).unwrap();
    assert_eq!(settings["format"], "bits1");
    let again = RetrievalIndex::load(&d.0).unwrap();
    assert_eq!(again.data, old.data);
    assert_eq!(again.paths, old.paths);
    assert!(again.settings.same_run(&old.settings));

    // An index from a newer crosspool is refused, and says why.
    let newer = d.0.join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    let mut m = meta.clone();
    m.insert("crosspool.index.version".into(), "3".into());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().collect();
    std::fs::write(
        newer.join("index.safetensors"),
        safetensors::serialize(views, Some(m)).unwrap(),
    )
    .unwrap();
    std::fs::copy(d.0.join("images.jsonl"), newer.join("images.jsonl")).unwrap();
    let e = RetrievalIndex::load(&newer).unwrap_err().to_string();
    assert!(e.contains("newer crosspool"), "{e}");
}

fn crosspool(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

/// A version 1 run is resumed by this version with the same flags: only the new image is
/// extracted, the old shard is kept, and the index over the directory holds all three. A
/// settings file of a newer version stops the resume with the reason.
#[test]
fn version_one_runs_resume() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/vgg16_hed.safetensors");
    assert!(
        weights.exists(),
        "run tools/fetch_weights.sh first: this test resumes a run made with the real VGG16"
    );
    let d = temp_dir("compat-resume");
    let out = d.0.join("codes");
    copy_dir(&v1("codes"), &out);
    // The run was made on another machine: point its settings at this one's weights file.
    let settings_path = out.join("extract.json");
    let text = std::fs::read_to_string(&settings_path).unwrap();
    let here = std::fs::canonicalize(&weights).unwrap();
    let text = text.replace(
        "/work/main/weights/vgg16_hed.safetensors",
        &here.display().to_string(),
    );
    std::fs::write(&settings_path, &text).unwrap();
    // Its shard's metadata names the weights too.
    let shard = out.join("shard-00000.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap();
    meta.insert("crosspool.weights".into(), here.display().to_string());
    let data = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
    std::fs::write(&shard, data).unwrap();
    let args = |out: &Path| {
        vec![
            "extract".to_string(),
            "--quiet".into(),
            "--resume".into(),
            "--weights".into(),
            weights.display().to_string(),
            "--size".into(),
            "32".into(),
            "--format".into(),
            "bits1".into(),
            "--norm".into(),
            "retrieval".into(),
            "--out".into(),
            out.display().to_string(),
            "tests/data/photos/chelsea.jpg".into(),
            "tests/data/photos/coffee.jpg".into(),
            "tests/data/photos/rocket.jpg".into(),
        ]
    };
    let a = args(&out);
    let r = crosspool(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("shard-00001.jsonl").exists());
    let (index, stats) = RetrievalIndex::build(&out, Storage::Auto).unwrap();
    assert_eq!((stats.images, stats.shards), (3, 2));
    assert_eq!(index.paths[2], "tests/data/photos/rocket.jpg");
    let old = RetrievalIndex::load(&v1("codes-index")).unwrap();
    let per = 512 * 16;
    assert_eq!(index.words()[..2 * per], old.words()[..]);
    let now = ExtractSettings::from_json(
        &std::fs::read_to_string(&settings_path).unwrap(),
        "extract.json",
    )
    .unwrap();
    assert_eq!(now.version, SETTINGS_VERSION);

    // Settings from a newer crosspool: refused, saying so.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings_path).unwrap()).unwrap();
    v["version"] = (SETTINGS_VERSION + 1).into();
    std::fs::write(&settings_path, v.to_string()).unwrap();
    let r = crosspool(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("newer crosspool"),
        "{err}"
    );
}
