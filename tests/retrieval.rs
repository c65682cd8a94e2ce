//! Retrieval: the GPU scoring kernel against the CPU reference (codes and floats, odd sizes,
//! a database split over several bindings), index building from extraction shards, and the
//! whole chain on real photographs with the real VGG16: fit-pca, extract, index, eval and
//! search through the command line.

mod common;

use common::{gpu, gpu_with_binding_cap, random, repo, seeded_weights_file, temp_dir};
use crosspool::features::{NormPreset, Pooling};
use crosspool::gpu::{GpuContext, GpuDatabase, ScoreKernel, ScoreKind};
use crosspool::model::Arch;
use crosspool::pooling::{LocalWindow, Quantization};
use crosspool::reference::quantize;
use crosspool::retrieval::score::{
    score_codes, score_floats, score_index, score_index_parallel, select_channels,
};
use crosspool::retrieval::{IndexData, RetrievalIndex, Storage};
use crosspool::store::settings::SETTINGS_VERSION;
use crosspool::store::writer::{OutputFormat, Row, RowData, ShardWriter};
use crosspool::store::ExtractSettings;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Random features with exact zeros mixed in (so 2-bit codes see all three signs).
fn features(n: usize, seed: u64) -> Vec<f32> {
    random(n, seed)
        .into_iter()
        .map(|v| if v.abs() < 0.1 { 0.0 } else { v })
        .collect()
}

/// Random per-query channel selections of `ksel` of `rows` channels.
fn selections(queries: usize, rows: usize, ksel: usize, seed: u64) -> Vec<u32> {
    (0..queries)
        .flat_map(|q| {
            let means = random(rows, seed + q as u64);
            select_channels(&means, Some(ksel))
        })
        .collect()
}

fn check_codes(
    ctx: &GpuContext,
    q: Quantization,
    images: usize,
    rows: usize,
    cols: usize,
    ksel: usize,
) {
    let nq = 3;
    let wpr = q.words_per_row(cols);
    let db: Vec<u32> = features(images * rows * cols, 11)
        .chunks(rows * cols)
        .flat_map(|img| quantize(img, cols, q))
        .collect();
    let queries: Vec<u32> = features(nq * rows * cols, 12)
        .chunks(rows * cols)
        .flat_map(|img| quantize(img, cols, q))
        .collect();
    let sel = selections(nq, rows, ksel, 13);
    let gdb = GpuDatabase::from_words(ctx, ScoreKind::Codes(q), rows, wpr, cols, &db).unwrap();
    let got = ScoreKernel::new(ctx)
        .unwrap()
        .score(ctx, &gdb, &queries, &sel, ksel)
        .unwrap();
    for qi in 0..nq {
        let want = score_codes(
            &queries[qi * rows * wpr..(qi + 1) * rows * wpr],
            &db,
            rows,
            wpr,
            &sel[qi * ksel..(qi + 1) * ksel],
            q,
            cols,
        );
        // Integer scores: exact.
        assert_eq!(
            &got[qi * images..(qi + 1) * images],
            &want[..],
            "{q:?} query {qi}, {images} images of {rows}x{cols}, {ksel} channels"
        );
    }
}

#[test]
fn code_scores_match_reference() {
    let ctx = gpu();
    // 131 images: not a multiple of the 64-image workgroup; 45 columns: rows end mid-word.
    for q in [Quantization::Bits1, Quantization::Sign2] {
        check_codes(ctx, q, 131, 37, 45, 5);
        check_codes(ctx, q, 131, 37, 45, 37);
        check_codes(ctx, q, 1, 4, 64, 1);
    }
}

#[test]
fn code_scores_across_bindings() {
    // 8 KiB bindings: 37 x 2 words is 296 bytes an image, so 131 images need several.
    let ctx = gpu_with_binding_cap(8 << 10);
    let wpr = Quantization::Bits1.words_per_row(45);
    let db = vec![0u32; 131 * 37 * wpr];
    let gdb = GpuDatabase::from_words(
        &ctx,
        ScoreKind::Codes(Quantization::Bits1),
        37,
        wpr,
        45,
        &db,
    )
    .unwrap();
    assert!(gdb.chunk_count() > 1, "{} chunks", gdb.chunk_count());
    check_codes(&ctx, Quantization::Bits1, 131, 37, 45, 7);
    check_codes(&ctx, Quantization::Sign2, 131, 37, 45, 7);
}

#[test]
fn float_scores_match_reference() {
    let ctx = gpu();
    let (images, rows, cols, nq) = (77, 9, 13, 2);
    let db = features(images * rows * cols, 21);
    let queries = features(nq * rows * cols, 22);
    for ksel in [1, 4, rows] {
        let sel = selections(nq, rows, ksel, 23);
        let gdb = GpuDatabase::from_words(
            ctx,
            ScoreKind::Floats,
            rows,
            cols,
            cols,
            bytemuck::cast_slice(&db),
        )
        .unwrap();
        let got = ScoreKernel::new(ctx)
            .unwrap()
            .score(ctx, &gdb, bytemuck::cast_slice(&queries), &sel, ksel)
            .unwrap();
        for qi in 0..nq {
            let s = &sel[qi * ksel..(qi + 1) * ksel];
            let q = &queries[qi * rows * cols..(qi + 1) * rows * cols];
            let want = score_floats(q, &db, rows, cols, s);
            // Error bound of an f32 sum of ksel * cols products, relative to the sum of
            // their magnitudes.
            let terms = ksel * cols;
            let bound = crosspool::reference::f32_dot_error_bound(terms);
            for i in 0..images {
                let img = &db[i * rows * cols..(i + 1) * rows * cols];
                let magnitude: f32 = s
                    .iter()
                    .flat_map(|&k| {
                        let r = k as usize * cols..(k as usize + 1) * cols;
                        q[r.clone()].iter().zip(&img[r]).map(|(a, b)| (a * b).abs())
                    })
                    .sum();
                let g = got[qi * images + i];
                assert!(
                    (g - want[i]).abs() <= bound * magnitude + f32::MIN_POSITIVE,
                    "query {qi} image {i}: {g} vs {} (k {ksel})",
                    want[i]
                );
            }
        }
    }
}

#[test]
fn scoring_rejects_bad_selections() {
    let ctx = gpu();
    let db = vec![0u32; 2 * 4];
    let gdb =
        GpuDatabase::from_words(ctx, ScoreKind::Codes(Quantization::Bits1), 4, 1, 32, &db).unwrap();
    let k = ScoreKernel::new(ctx).unwrap();
    let err = k.score(ctx, &gdb, &[0; 4], &[4], 1).unwrap_err();
    assert!(err.to_string().contains("channel 4"), "{err}");
    assert!(k.score(ctx, &gdb, &[0; 3], &[0], 1).is_err());
}

/// The settings of a VGG16 cross-layer extraction with `rows` x `cols` features.
fn settings(rows: usize, cols: usize) -> ExtractSettings {
    ExtractSettings {
        version: SETTINGS_VERSION,
        arch: Arch::Vgg16,
        weights: "/nowhere/vgg16.safetensors".into(),
        weights_fingerprint: None,
        pca_fingerprint: None,
        aconv_fingerprint: None,
        layers: vec!["conv5_2".into(), "conv5_3".into()],
        pooling: Pooling::CrossLayer,
        channel_pooling: Default::default(),
        window: LocalWindow::UNIT,
        levels: 0,
        norm: NormPreset::Retrieval,
        size: 224,
        decode: crosspool::input::DecodeMode::Exact,
        pca: None,
        aconv: None,
        format: OutputFormat::F32,
        precision: Default::default(),
        products: Default::default(),
        feature_rows: rows,
        feature_cols: cols,
    }
}

/// The CPU backend's scoring on all cores against the sequential reference: codes of both
/// kinds and floats, 600 images (three blocks of 256 images, the last partial), three
/// queries with their own channels. Integer and f64 sums per image: exactly equal.
#[test]
fn parallel_cpu_scores_equal_the_reference() {
    let (images, rows, cols, nq, ksel) = (600, 7, 45, 3, 4);
    let sel = selections(nq, rows, ksel, 31);
    let index = |data| RetrievalIndex {
        rows,
        cols,
        data,
        guide_mean: None,
        paths: (0..images).map(|i| format!("img{i}.jpg")).collect(),
        settings: settings(rows, cols),
    };
    let db = features(images * rows * cols, 32);
    let queries = features(nq * rows * cols, 33);
    for q in [Quantization::Bits1, Quantization::Sign2] {
        let codes = |v: &[f32]| -> Vec<u32> {
            v.chunks(rows * cols)
                .flat_map(|img| quantize(img, cols, q))
                .collect()
        };
        let idx = index(IndexData::Codes {
            format: q,
            words_per_row: q.words_per_row(cols),
            words: codes(&db),
        });
        let qc = codes(&queries);
        let want = score_index(&idx, &qc, &sel, ksel);
        assert_eq!(want.len(), nq * images);
        assert_eq!(score_index_parallel(&idx, &qc, &sel, ksel), want, "{q:?}");
    }
    let idx = index(IndexData::Floats(db));
    let qf: &[u32] = bytemuck::cast_slice(&queries);
    let want = score_index(&idx, qf, &sel, ksel);
    assert!(want.iter().any(|&s| s != 0.0));
    assert_eq!(score_index_parallel(&idx, qf, &sel, ksel), want, "floats");
}

/// Writes two parts of an extraction (float features with guidance means; one failed
/// image) as `crosspool extract` does.
fn fake_extraction(dir: &Path, rows: usize, cols: usize) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let settings = settings(rows, cols);
    let mut kept = Vec::new();
    for (part, prefix) in ["part0of2-", "part1of2-"].iter().enumerate() {
        let (mut w, _) = ShardWriter::open(dir, prefix, &settings, 2, false).unwrap();
        for i in 0..3 {
            let path = format!("img/{part}-{i}.jpg");
            if part == 1 && i == 1 {
                w.push(Row::Failed {
                    source: crosspool::input::ImageSource::File(path.into()),
                    reason: "broken".into(),
                })
                .unwrap();
                continue;
            }
            let v = features(rows * cols, (part * 10 + i) as u64);
            let g: Vec<f32> = random(rows, (part * 10 + i + 100) as u64)
                .iter()
                .map(|x| x.abs())
                .collect();
            w.push(Row::Ok {
                source: crosspool::input::ImageSource::File(path.clone().into()),
                values: RowData::F32(v.clone()),
                guide_mean: Some(g.clone()),
            })
            .unwrap();
            kept.push((path, v, g));
        }
        w.finish().unwrap();
    }
    kept
}

#[test]
fn index_from_shards_round_trips() {
    let d = temp_dir("index");
    let (rows, cols) = (5, 40);
    let kept = fake_extraction(&d.0, rows, cols);
    let (index, stats) = RetrievalIndex::build(&d.0, Storage::Codes(Quantization::Bits1)).unwrap();
    assert_eq!((stats.images, stats.failed, stats.shards), (5, 1, 4));
    assert_eq!(
        index.paths,
        kept.iter().map(|k| k.0.clone()).collect::<Vec<_>>()
    );
    let IndexData::Codes { words, .. } = &index.data else {
        panic!("expected codes")
    };
    let want: Vec<u32> = kept
        .iter()
        .flat_map(|k| quantize(&k.1, cols, Quantization::Bits1))
        .collect();
    assert_eq!(words, &want);
    let means: Vec<f32> = kept.iter().flat_map(|k| k.2.clone()).collect();
    assert_eq!(index.guide_mean.as_ref().unwrap(), &means);
    let out = d.0.join("db");
    index.save(&out).unwrap();
    assert_eq!(RetrievalIndex::load(&out).unwrap(), index);
    // A save cut between its two files leaves new names beside old codes (here: the same
    // count, in another order): refused, never read as a mix.
    let names = std::fs::read_to_string(out.join("images.jsonl")).unwrap();
    let mut lines: Vec<&str> = names.lines().collect();
    lines.reverse();
    std::fs::write(out.join("images.jsonl"), lines.join("\n") + "\n").unwrap();
    let e = RetrievalIndex::load(&out).unwrap_err().to_string();
    assert!(e.contains("images.jsonl"), "{e}");
    index.save(&out).unwrap();
    assert_eq!(RetrievalIndex::load(&out).unwrap(), index);

    // Floats are kept at unit length per image.
    let (floats, _) = RetrievalIndex::build(&d.0, Storage::Floats).unwrap();
    let IndexData::Floats(v) = &floats.data else {
        panic!("expected floats")
    };
    for (img, k) in v.chunks(rows * cols).zip(&kept) {
        let n: f32 = k.1.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (a, b) in img.iter().zip(&k.1) {
            assert!((a - b / n).abs() <= 1e-6, "{a} vs {}", b / n);
        }
    }
}

#[test]
fn index_of_a_directory_without_shards_is_an_error() {
    let d = temp_dir("empty");
    let err = RetrievalIndex::build(&d.0, Storage::Floats)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no finished feature shards"), "{err}");
}

// ---- The whole chain on real photographs -------------------------------------------------

const SIZE: &str = "160";

fn crosspool(args: &[&str]) -> String {
    String::from_utf8(common::run_ok(args).stdout).unwrap()
}

fn eval(index: &Path, gt: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "eval",
        "--json",
        "--index",
        index.to_str().unwrap(),
        "--ground-truth",
        gt.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&crosspool(&args)).unwrap()
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Ground truth with each query's relevant images swapped for the next group's: a ranking
/// that does not follow the scenes cannot score well on it.
fn shifted_ground_truth(gt: &Path, out: &Path) {
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(gt)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut text = String::new();
    for (i, l) in lines.iter().enumerate() {
        let mut l2 = l.clone();
        l2["relevant"] = lines[(i + 1) % lines.len()]["relevant"].clone();
        text.push_str(&format!("{l2}\n"));
    }
    std::fs::write(out, text).unwrap();
}

#[test]
fn real_photos_retrieve_their_transformed_copies() {
    let weights = repo("weights/vgg16_hed.safetensors");
    assert!(
        weights.exists(),
        "{} is missing: run bash tools/fetch_weights.sh",
        weights.display()
    );
    let d = temp_dir("real");
    let set = repo("tests/data/retrieval");
    let gt = set.join("groundtruth.jsonl");
    let w = weights.to_str().unwrap();
    let p = |n: &str| d.0.join(n).to_str().unwrap().to_string();

    // PCA fitted on other photographs than the database's (tests/data/photos), to 256
    // dimensions: 4 photos give 400 local features (rank at most 399), so all 512 components
    // would include null-space directions that are arbitrary, and 1-bit codes of them would
    // move with 1e-6 differences between backends. Fitting and extraction run on the CPU
    // backend (seconds; lavapipe took two minutes); the GPU scores and extracts queries below.
    crosspool(&[
        "fit-pca",
        "--device",
        "cpu",
        "--weights",
        w,
        "--size",
        SIZE,
        "--dims",
        "256",
        "--out",
        &p("pca.safetensors"),
        repo("tests/data/photos").to_str().unwrap(),
    ]);
    crosspool(&[
        "extract",
        "--quiet",
        "--device",
        "cpu",
        "--weights",
        w,
        "--size",
        SIZE,
        "--pca",
        &p("pca.safetensors"),
        "--norm",
        "retrieval",
        "--out",
        &p("features"),
        set.to_str().unwrap(),
    ]);
    crosspool(&["index", &p("features"), "--out", &p("bits")]);
    crosspool(&[
        "index",
        &p("features"),
        "--out",
        &p("floats"),
        "--binarize",
        "none",
    ]);

    let bits = eval(&d.0.join("bits"), &gt, &["-k", "50", "--device", "cpu"]);
    assert_eq!(bits["kind"], "bits1");
    assert_eq!(num(&bits, "images"), 37.0);
    assert_eq!(num(&bits, "channels"), 50.0);
    // 1-bit codes are 32x smaller than floats (plus the 512 guidance means): 512 channels
    // of 256 PCA dimensions, 8 words each.
    assert_eq!(
        num(&bits, "bytes_per_image"),
        (512 * 8 * 4 + 512 * 4) as f64
    );
    let floats = eval(&d.0.join("floats"), &gt, &["-k", "50"]);
    let cosine = eval(&d.0.join("floats"), &gt, &["-k", "all"]);
    eprintln!(
        "mAP: bits1 k=50 {:.3}, float k=50 {:.3}, cosine {:.3}",
        num(&bits, "map"),
        num(&floats, "map"),
        num(&cosine, "map")
    );
    // Measured: 0.988, 1.0 and 1.0 with recall@1 of 1 for all three; chance is about 0.1.
    assert!(num(&bits, "map") >= 0.85, "{bits}");
    assert!(num(&floats, "map") >= 0.95, "{floats}");
    assert!(num(&cosine, "map") >= 0.95, "{cosine}");
    for r in [&bits, &floats, &cosine] {
        assert_eq!(num(r, "recall_at_1"), 1.0, "{r}");
    }

    // The GPU kernel and the CPU backend agree on every query's AP.
    let cpu = eval(&d.0.join("bits"), &gt, &["-k", "50", "--device", "cpu"]);
    assert!(
        cpu["device"].as_str().unwrap().starts_with("CPU backend"),
        "{cpu}"
    );
    assert_eq!(cpu["per_query"], bits["per_query"]);

    // Control: the same rankings against the wrong scenes score low.
    shifted_ground_truth(&gt, &d.0.join("shifted.jsonl"));
    let wrong = eval(&d.0.join("bits"), &d.0.join("shifted.jsonl"), &["-k", "50"]);
    assert!(num(&wrong, "map") < 0.3, "{wrong}");

    // Query images, extracted on either device, find their scene first: one in the index
    // (the rotated cat must come back first) and one from outside it.
    for device in ["gpu", "cpu"] {
        let out = crosspool(&[
            "search",
            "--json",
            "--device",
            device,
            "--index",
            &p("bits"),
            "--top",
            "4",
            "--query",
            set.join("chelsea_rotate.jpg").to_str().unwrap(),
            repo("tests/data/photos/coffee.jpg").to_str().unwrap(),
        ]);
        let res: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(res.len(), 2);
        let top = |r: &serde_json::Value| r["results"][0]["path"].as_str().unwrap().to_string();
        assert!(
            top(&res[0]).ends_with("chelsea_rotate.jpg"),
            "{device}: {}",
            res[0]
        );
        assert!(top(&res[1]).contains("coffee"), "{device}: {}", res[1]);
    }
}

/// The SPoC baseline (sum pooling, L2) and a float index without channel means, through the
/// command line on seeded AlexNet weights: the commands work, report what they hold, and
/// refuse channel selection where there are no channels to select.
#[test]
fn spoc_baseline_through_the_cli() {
    let d = temp_dir("spoc");
    let weights = d.0.join("alexnet.safetensors");
    let meta = HashMap::from([("crosspool.arch".to_string(), "alexnet".to_string())]);
    std::fs::write(
        &weights,
        seeded_weights_file(crosspool::model::Arch::Alexnet, Some(meta)),
    )
    .unwrap();
    let set = repo("tests/data/retrieval");
    let gt = set.join("groundtruth.jsonl");
    let p = |n: &str| d.0.join(n).to_str().unwrap().to_string();
    crosspool(&[
        "extract",
        "--quiet",
        "--weights",
        weights.to_str().unwrap(),
        "--size",
        "99",
        "--pooling",
        "sum",
        "--layers",
        "conv5",
        "--norm",
        "l2",
        "--out",
        &p("features"),
        set.to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&crosspool(&[
        "index",
        "--json",
        &p("features"),
        "--out",
        &p("db"),
    ]))
    .unwrap();
    assert_eq!(summary["kind"], "f32");
    assert_eq!(summary["rows"], 1);
    assert_eq!(summary["cols"], 256);
    assert_eq!(summary["channel_selection"], false);
    let r = eval(&d.0.join("db"), &gt, &["--device", "gpu"]);
    assert_eq!(num(&r, "channels"), 1.0);
    let map = num(&r, "map");
    assert!((0.0..=1.0).contains(&map), "{r}");
    // GPU and CPU backend agree on every query (`--cpu` is the older spelling of
    // `--device cpu`).
    let cpu = eval(&d.0.join("db"), &gt, &["--cpu"]);
    assert!(
        cpu["device"].as_str().unwrap().starts_with("CPU backend"),
        "{cpu}"
    );
    assert_eq!(cpu["per_query"], r["per_query"]);
    // Search extracts its query and scores on either device, with the same ranking; the
    // scores are cosines of features both backends compute to about 1e-6 of the reference
    // (tests/golden.rs), so they agree to 1e-5.
    let search_on = |device: &str| -> serde_json::Value {
        let out = crosspool(&[
            "search",
            "--json",
            "--device",
            device,
            "--index",
            &p("db"),
            "--top",
            "3",
            "--query",
            set.join("coins.jpg").to_str().unwrap(),
        ]);
        serde_json::from_str(out.lines().next().unwrap()).unwrap()
    };
    let (on_gpu, on_cpu) = (search_on("gpu"), search_on("cpu"));
    assert!(
        on_cpu["device"]
            .as_str()
            .unwrap()
            .starts_with("CPU backend"),
        "{on_cpu}"
    );
    for (g, c) in on_gpu["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(on_cpu["results"].as_array().unwrap())
    {
        assert_eq!(g["path"], c["path"], "{on_gpu} vs {on_cpu}");
        assert!(
            (num(g, "score") - num(c, "score")).abs() <= 1e-5,
            "{on_gpu} vs {on_cpu}"
        );
    }
    // No layer t+1 here: asking for k channels is an error that says why.
    let out = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args([
            "eval",
            "--index",
            &p("db"),
            "--ground-truth",
            gt.to_str().unwrap(),
            "-k",
            "5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use -k all"), "{err}");
    // An unreadable query is reported and the exit status says so; the others are ranked.
    let out = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args([
            "search",
            "--json",
            "--index",
            &p("db"),
            "--top",
            "3",
            "--query",
        ])
        .arg(set.join("coins.jpg"))
        .arg(d.0.join("missing.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each query is a line, the unreadable one with why it failed.
    assert_eq!(lines.len(), 2, "{stdout}");
    let failed: Vec<_> = lines.iter().filter(|l| l["failed"].is_string()).collect();
    assert_eq!(failed.len(), 1, "{stdout}");
    assert!(failed[0]["query"]
        .as_str()
        .unwrap()
        .ends_with("missing.jpg"));
    let lines: Vec<_> = lines.iter().filter(|l| l["failed"].is_null()).collect();
    // The query is in the index: it is its own best match.
    assert!(
        lines[0]["results"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("/coins.jpg"),
        "{}",
        lines[0]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jpg"));
}
