//! `crosspool selftest` on the test adapter: every check passes on correct kernels, and
//! kernels broken on purpose (through CROSSPOOL_SHADER_DIR, as a user trying an edited
//! shader would) fail exactly their own rows.

mod common;

use common::temp_dir;
use crosspool::gpu::ConvTile;
use std::path::Path;
use std::process::Command;

fn selftest(shader_dir: Option<&Path>) -> (i32, serde_json::Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crosspool"));
    cmd.args(["selftest", "--quick", "--json"]);
    if let Some(d) = shader_dir {
        cmd.env("CROSSPOOL_SHADER_DIR", d);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("selftest printed no JSON ({e}): {stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// The rows of `report` whose kernel is `kernel`, as (status, detail).
fn rows<'a>(report: &'a serde_json::Value, kernel: &str) -> Vec<(&'a str, &'a str)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kernel"] == kernel)
        .map(|r| (r["status"].as_str().unwrap(), r["detail"].as_str().unwrap()))
        .collect()
}

#[test]
fn every_kernel_passes_on_the_test_adapter() {
    let (code, report, stderr) = selftest(None);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["failed"], 0, "{stderr}");
    // Every kernel family ran and passed; only what the adapter lacks is not available.
    // Every scalar convolution tile (the test shapes include one whose K fits whole-K), but
    // K split 16 ways, which --quick leaves out.
    let tiles: Vec<String> = ConvTile::every_scalar(0)
        .into_iter()
        .filter(|t| *t != ConvTile::SplitK(16))
        .map(|t| format!("conv {}", t.name()))
        .collect();
    for kernel in tiles.iter().map(String::as_str).chain([
        "max pool",
        "relu",
        "region pool sum",
        "region pool max",
        "field pool",
        "cross-layer sum",
        "cross-layer max",
        "normalize",
        "pca projection",
        "quantize",
        "score codes",
        "score floats",
        "features (network)",
    ]) {
        let r = rows(&report, kernel);
        assert!(
            !r.is_empty() && r.iter().all(|(s, _)| *s == "pass"),
            "{kernel}: {r:?}"
        );
    }
    // Both storage types of the convolutions, and the whole pass in f16 (lavapipe has
    // shader-f16 but no cooperative matrices).
    let all = report["rows"].as_array().unwrap();
    let precisions = |k: &str| -> Vec<&str> {
        all.iter()
            .filter(|r| r["kernel"] == k && r["status"] == "pass")
            .map(|r| r["precision"].as_str().unwrap())
            .collect()
    };
    assert!(precisions("conv small").contains(&"f32"));
    assert!(precisions("conv small").contains(&"f16 (f16->f16)"));
    assert!(precisions("features (network)").contains(&"f16"));
    let coop = rows(&report, "conv coop");
    assert!(
        !coop.is_empty() && coop.iter().all(|(s, _)| *s == "unavailable"),
        "{coop:?}"
    );
    // The table went to standard error as the checks finished.
    assert!(
        stderr.contains("err/bound") && stderr.contains("passed, 0 failed"),
        "{stderr}"
    );
}

#[test]
fn kernels_broken_on_purpose_fail_their_rows_and_the_exit_status() {
    let dir = temp_dir("selftest-shaders");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    std::fs::create_dir_all(dir.0.join("include")).unwrap();
    for sub in ["", "include"] {
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "wgsl") {
                std::fs::copy(&p, dir.0.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let edit = |rel: &str, from: &str, to: &str| {
        let path = dir.0.join(rel);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{rel}: `{from}`");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    };
    // The convolution epilogue forgets the bias (split-K's reduction adds it on its own).
    edit(
        "include/conv2d_prelude.wgsl",
        "bias[min(n, p.out_c - 1u)],",
        "0.0 * bias[min(n, p.out_c - 1u)],",
    );
    // Max pooling keeps the smallest value instead.
    edit(
        "maxpool2d.wgsl",
        "if (!seen || v > best) {",
        "if (!seen || v < best) {",
    );
    // A file missing from the folder is an error, not a silent fallback.
    std::fs::remove_file(dir.0.join("relu.wgsl")).unwrap();

    let (code, report, stderr) = selftest(Some(&dir.0));
    assert_eq!(code, 1, "{stderr}");
    for kernel in [
        "conv small",
        "conv large",
        "conv large2",
        "conv whole",
        "max pool",
    ] {
        let r = rows(&report, kernel);
        assert!(
            !r.is_empty() && r.iter().all(|(s, _)| *s == "fail"),
            "{kernel}: {r:?}"
        );
    }
    // The bias the epilogue dropped is what is off: the first failing output names it.
    assert!(
        rows(&report, "conv small")[0]
            .1
            .contains("where the reference is"),
        "{:?}",
        rows(&report, "conv small")
    );
    let relu = rows(&report, "relu");
    assert!(
        relu.iter().all(|(s, d)| *s == "fail"
            && d.contains("CROSSPOOL_SHADER_DIR")
            && d.contains("relu.wgsl")),
        "{relu:?}"
    );
    // The kernels left alone still pass, split-K among them.
    for kernel in [
        "conv split2",
        "conv split5",
        "quantize",
        "score codes",
        "cross-layer sum",
    ] {
        let r = rows(&report, kernel);
        assert!(
            !r.is_empty() && r.iter().all(|(s, _)| *s == "pass"),
            "{kernel}: {r:?}"
        );
    }
    assert!(stderr.contains("shaders: from"), "{stderr}");
    assert!(stderr.contains("check(s) failed"), "{stderr}");
}

#[test]
fn a_misspelt_tile_is_refused_before_any_check_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args(["selftest", "--quick"])
        .env("CROSSPOOL_CONV_TILE", "larg")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("CROSSPOOL_CONV_TILE=larg is not one of"),
        "{stderr}"
    );
    // Refused as a setting, not reported as kernels failing on the adapter.
    assert!(
        !stdout.contains("FAIL") && !stderr.contains("may be wrong"),
        "{stdout}{stderr}"
    );
}
