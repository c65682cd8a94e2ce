//! `--autotune`: convolution tiles chosen by timing once per layer shape and device, kept in
//! a cache file that later runs read instead of timing again; a corrupt cache is ignored with
//! a warning and replaced; `off` times nothing and writes nothing.

mod common;

use common::temp_dir;
use crosspool::gpu::ConvTile;
use std::path::Path;
use std::process::Command;

/// `crosspool [--autotune MODE --autotune-cache CACHE] bench` on VGG16's synthetic weights,
/// small enough to time every layer in seconds on software Vulkan: (status, stderr).
fn bench(mode: &str, cache: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args(["--autotune", mode, "--autotune-cache"])
        .arg(cache)
        .args([
            "bench",
            "--size",
            "32",
            "--batch",
            "1",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--in-flight",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn entries(cache: &Path) -> serde_json::Map<String, serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cache).unwrap()).unwrap();
    assert_eq!(v["version"], 1, "{v}");
    v["tiles"].as_object().unwrap().clone()
}

#[test]
fn tiles_are_timed_once_and_kept_in_the_cache() {
    let d = temp_dir("autotune");
    let cache = d.0.join("cache").join("tiles.json");

    // Off: nothing timed, nothing written.
    let (code, err) = bench("off", &cache);
    assert_eq!(code, 0, "{err}");
    assert!(!cache.exists());

    // On: one entry per distinct convolution of VGG16 up to conv5_3 (13 layers, 9 shapes
    // at 32x32: conv1_2/2_2/3_2..3_3/4_2..4_3/5_1..5_3 repeat their predecessor's), each a
    // tile, each key naming the adapter.
    let (code, err) = bench("on", &cache);
    assert_eq!(code, 0, "{err}");
    let tuned = entries(&cache);
    assert_eq!(tuned.len(), 9, "{tuned:?}");
    for (k, v) in &tuned {
        assert!(k.contains("llvmpipe") || k.contains("Vulkan"), "{k}");
        assert!(
            ConvTile::from_name(v.as_str().unwrap()).is_some(),
            "{k}: {v}"
        );
    }

    // A later run reads the choices and times nothing: the file, rewritten here with every
    // tile flipped and in another layout, is left as it is (a run that timed would save).
    let flipped: serde_json::Map<_, _> = tuned
        .iter()
        .map(|(k, v)| {
            let other = if v == "small" { "large" } else { "small" };
            (k.clone(), serde_json::Value::from(other))
        })
        .collect();
    let text = serde_json::json!({"version": 1, "tiles": flipped}).to_string();
    std::fs::write(&cache, &text).unwrap();
    let (code, err) = bench("on", &cache);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), text);

    // A corrupt cache is ignored with a warning, the layers are timed again, and a good
    // cache replaces it.
    std::fs::write(&cache, "{\"version\": 1, \"tiles\": {\"x\": \"enormous\"").unwrap();
    let (code, err) = bench("on", &cache);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: autotune: ignoring") && err.contains("timed again"),
        "{err}"
    );
    assert_eq!(entries(&cache).len(), 9);

    // A bad mode is refused, naming the accepted ones.
    let out = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .env("CROSSPOOL_AUTOTUNE", "sometimes")
        .args(["info"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("sometimes"), "{err}");
}
