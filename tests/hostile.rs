//! Regressions for the defects a hostile user found (issue 12): inputs that hung a run, ate
//! memory, or were stored as if they were fine.

mod common;

use common::temp_dir;
use crosspool::input::{collect_images, decode_rgb, read_capped, DecodeLimits};
use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Every cut of a JPEG — baseline or progressive, 10% to 99% of its bytes — is an error that
/// says the file is truncated; the whole file decodes.
#[test]
fn truncated_jpegs_are_failures() {
    let d = temp_dir("truncated");
    for src in [
        "tests/data/photos/chelsea.jpg",
        "tests/data/odd/progressive.jpg",
    ] {
        let bytes = std::fs::read(repo(src)).unwrap();
        decode_rgb(&repo(src), DecodeLimits::default()).unwrap();
        for pct in (10..100).step_by(3) {
            let cut = d.0.join(format!("cut{pct}.jpg"));
            std::fs::write(&cut, &bytes[..bytes.len() * pct / 100]).unwrap();
            match decode_rgb(&cut, DecodeLimits::default()) {
                Ok(_) => panic!("{src} cut at {pct}% decoded as if whole"),
                Err(e) => assert!(e.to_string().contains("truncated"), "{src} {pct}%: {e}"),
            }
        }
    }
}

/// A JPEG whose header claims 19000 x 19000 is refused from its header, before the decoder
/// allocates the 1 GB it would need.
#[test]
fn huge_jpeg_headers_are_refused_before_decoding() {
    let mut bytes = std::fs::read(repo("tests/data/photos/chelsea.jpg")).unwrap();
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    // SOF0: marker, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&19000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&19000u16.to_be_bytes());
    let d = temp_dir("huge");
    let p = d.0.join("huge.jpg");
    std::fs::write(&p, &bytes).unwrap();
    let e = decode_rgb(&p, DecodeLimits::default()).unwrap_err();
    assert!(e.to_string().contains("19000x19000"), "{e}");
}

#[test]
fn files_over_the_size_cap_are_not_read() {
    let photo = repo("tests/data/photos/chelsea.jpg");
    let len = std::fs::metadata(&photo).unwrap().len();
    assert_eq!(read_capped(&photo, len).unwrap().len() as u64, len);
    let e = read_capped(&photo, len - 1).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    let limits = DecodeLimits {
        max_file_bytes: 1000,
        ..DecodeLimits::default()
    };
    let e = decode_rgb(&photo, limits).unwrap_err();
    assert!(e.to_string().contains("--max-file-bytes"), "{e}");
}

#[cfg(unix)]
#[test]
fn devices_and_fifos_are_not_read() {
    let d = temp_dir("special");
    let zero = d.0.join("zero.jpg");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = decode_rgb(&zero, DecodeLimits::default()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let fifo = d.0.join("pipe.jpg");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Refused without opening it (opening a FIFO with no writer blocks forever).
    let e = decode_rgb(&fifo, DecodeLimits::default()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    // Walking a directory skips them; the good image beside them is found.
    std::fs::copy(repo("tests/data/photos/coffee.jpg"), d.0.join("good.jpg")).unwrap();
    let found = collect_images(std::slice::from_ref(&d.0)).unwrap();
    assert_eq!(found, vec![d.0.join("good.jpg")]);
}

/// Symlink loops: each directory is walked once, so two links back to the top add nothing.
#[cfg(unix)]
#[test]
fn symlink_loops_are_walked_once() {
    let d = temp_dir("loops");
    let top = d.0.join("top");
    std::fs::create_dir_all(top.join("sub")).unwrap();
    std::fs::copy(repo("tests/data/photos/coffee.jpg"), top.join("a.jpg")).unwrap();
    std::fs::copy(repo("tests/data/photos/rocket.jpg"), top.join("sub/b.jpg")).unwrap();
    std::os::unix::fs::symlink(".", top.join("x")).unwrap();
    std::os::unix::fs::symlink("..", top.join("sub/y")).unwrap();
    let found = collect_images(std::slice::from_ref(&top)).unwrap();
    assert_eq!(found, vec![top.join("a.jpg"), top.join("sub/b.jpg")]);
}

/// A shard whose stored values went bad (NaN, Inf): `index` leaves the row out and names it,
/// the other rows index as before, and `export-npy` refuses, naming the image.
#[test]
fn non_finite_rows_are_named_and_kept_out() {
    use crosspool::features::{NormPreset, Pooling};
    use crosspool::model::Arch;
    use crosspool::pooling::LocalWindow;
    use crosspool::retrieval::{RetrievalIndex, Storage};
    use crosspool::store::settings::SETTINGS_VERSION;
    use crosspool::store::writer::{export_npy, OutputFormat, Row, RowData, ShardWriter};
    use crosspool::store::ExtractSettings;
    let d = temp_dir("nan-rows");
    let settings = ExtractSettings {
        version: SETTINGS_VERSION,
        arch: Arch::Vgg16,
        weights: "/nowhere/vgg16.safetensors".into(),
        weights_fingerprint: None,
        pca_fingerprint: None,
        aconv_fingerprint: None,
        layers: vec!["conv5_3".into()],
        pooling: Pooling::Sum,
        channel_pooling: Default::default(),
        window: LocalWindow::UNIT,
        levels: 0,
        norm: NormPreset::L2,
        size: 224,
        decode: crosspool::input::DecodeMode::Exact,
        pca: None,
        aconv: None,
        format: OutputFormat::F32,
        precision: Default::default(),
        products: Default::default(),
        feature_rows: 1,
        feature_cols: 4,
    };
    let (mut w, _) = ShardWriter::open(&d.0, "", &settings, 10, false).unwrap();
    let rows = [
        ("a.jpg", [1.0, 0.0, 0.0, 0.0]),
        ("b.jpg", [0.5, f32::NAN, 0.0, 0.0]),
        ("c.jpg", [0.0, 1.0, f32::INFINITY, 0.0]),
        ("d.jpg", [0.0, 0.0, 3.0, 4.0]),
    ];
    for (p, v) in rows {
        w.push(Row::Ok {
            source: crosspool::input::ImageSource::File(p.into()),
            values: RowData::F32(v.to_vec()),
            guide_mean: None,
        })
        .unwrap();
    }
    w.finish().unwrap();
    let (index, stats) = RetrievalIndex::build(&d.0, Storage::Floats).unwrap();
    assert_eq!(index.paths, ["a.jpg", "d.jpg"]);
    let named: Vec<&str> = stats.rejected.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(named, ["b.jpg", "c.jpg"]);
    assert!(
        stats.rejected[0].1.contains("row 1"),
        "{:?}",
        stats.rejected
    );
    match &index.data {
        crosspool::retrieval::IndexData::Floats(v) => {
            assert_eq!(v, &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.8])
        }
        other => panic!("{other:?}"),
    }
    let e = export_npy(&d.0, None, &d.0.join("x.npy")).unwrap_err();
    assert!(e.to_string().contains("b.jpg"), "{e}");
    assert!(!d.0.join("x.npy").exists());
}

fn crosspool_cmd() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_crosspool"))
}

/// Resuming after the weights file behind the same path changed (one weight's sign flipped)
/// is refused: the run would mix features of two networks.
#[test]
fn resume_refuses_changed_weights() {
    use crosspool::model::Arch;
    let d = temp_dir("changed-weights");
    let weights = d.0.join("w.safetensors");
    let meta =
        std::collections::HashMap::from([("crosspool.arch".to_string(), "alexnet".to_string())]);
    let bytes = common::seeded_weights_file(Arch::Alexnet, Some(meta));
    std::fs::write(&weights, &bytes).unwrap();
    let out = d.0.join("out");
    let run = |photos: &[&str]| {
        let mut c = crosspool_cmd();
        c.args([
            "extract",
            "--quiet",
            "--resume",
            "--size",
            "67",
            "--weights",
        ])
        .arg(&weights)
        .arg("--out")
        .arg(&out);
        for p in photos {
            c.arg(repo(&format!("tests/data/photos/{p}")));
        }
        c.output().unwrap()
    };
    let r = run(&["coffee.jpg"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // The same file again: the resume goes on.
    let r = run(&["coffee.jpg", "rocket.jpg"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Flip the sign of the first stored weight (the high byte of a little-endian f32).
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut changed = bytes.clone();
    changed[8 + header + 3] ^= 0x80;
    std::fs::write(&weights, &changed).unwrap();
    let r = run(&["coffee.jpg", "rocket.jpg", "chelsea.jpg"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "resumed with other weights");
    assert!(err.contains("content changed"), "{err}");
}

fn sum_settings() -> crosspool::store::ExtractSettings {
    use crosspool::features::{NormPreset, Pooling};
    use crosspool::store::settings::SETTINGS_VERSION;
    use crosspool::store::ExtractSettings;
    ExtractSettings {
        version: SETTINGS_VERSION,
        arch: crosspool::model::Arch::Vgg16,
        weights: "/nowhere/vgg16.safetensors".into(),
        weights_fingerprint: None,
        pca_fingerprint: None,
        aconv_fingerprint: None,
        layers: vec!["conv5_3".into()],
        pooling: Pooling::Sum,
        channel_pooling: Default::default(),
        window: crosspool::pooling::LocalWindow::UNIT,
        levels: 0,
        norm: NormPreset::L2,
        size: 224,
        decode: crosspool::input::DecodeMode::Exact,
        pca: None,
        aconv: None,
        format: crosspool::store::writer::OutputFormat::F32,
        precision: Default::default(),
        products: Default::default(),
        feature_rows: 1,
        feature_cols: 4,
    }
}

/// Two runs writing the same part of one --out would overwrite each other's shards: the
/// second is refused, naming the holder; other parts and later runs go ahead.
#[test]
fn a_second_writer_of_one_part_is_refused() {
    use crosspool::store::writer::ShardWriter;
    let d = temp_dir("two-writers");
    let s = sum_settings();
    let (first, _) = ShardWriter::open(&d.0, "", &s, 10, false).unwrap();
    let e = match ShardWriter::open(&d.0, "", &s, 10, true) {
        Ok(_) => panic!("a second writer of the same part was let in"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("another crosspool extract"), "{e}");
    assert!(
        e.contains(&format!("process {}", std::process::id())),
        "{e}"
    );
    // Parts of a job array each have their own lock.
    let (part, _) = ShardWriter::open(&d.0, "part1of2-", &s, 10, false).unwrap();
    drop((first, part));
    // Another test's child process may hold a copy of the lock's descriptor for the moment
    // between its fork and exec; the lock is free once that passes.
    let reopened = (0..100).any(|_| {
        let ok = ShardWriter::open(&d.0, "", &s, 10, true).is_ok();
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        ok
    });
    assert!(reopened, "the lock outlived its writer");
}

/// Writing where nothing can be written says so ("cannot write"), not "cannot read".
#[test]
fn write_failures_say_write() {
    let d = temp_dir("out-is-a-file");
    let out = d.0.join("taken");
    std::fs::write(&out, b"a file, not a directory").unwrap();
    let e = match crosspool::store::writer::ShardWriter::open(&out, "", &sum_settings(), 10, false)
    {
        Ok(_) => panic!("opened a file as an output directory"),
        Err(e) => e.to_string(),
    };
    assert!(e.starts_with("cannot write"), "{e}");
}

/// A BMP cut short says it is truncated, not "failed to fill whole buffer".
#[test]
fn truncated_bmps_say_so() {
    let d = temp_dir("truncated-bmp");
    let whole = d.0.join("whole.bmp");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90]))
        .save(&whole)
        .unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let cut = d.0.join("cut.bmp");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let e = decode_rgb(&cut, DecodeLimits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
}

/// export-npy over a directory written by parts of a job array exports every part, in part
/// order (it used to say the directory held no finished shards).
#[test]
fn export_npy_joins_the_parts_of_a_job_array() {
    use crosspool::store::writer::{export_npy, Row, RowData, ShardWriter};
    let d = temp_dir("npy-parts");
    let s = sum_settings();
    for (part, prefix) in ["part0of2-", "part1of2-"].iter().enumerate() {
        let (mut w, _) = ShardWriter::open(&d.0, prefix, &s, 10, false).unwrap();
        w.push(Row::Ok {
            source: crosspool::input::ImageSource::File(format!("{part}.jpg").into()),
            values: RowData::F32(vec![part as f32; 4]),
            guide_mean: None,
        })
        .unwrap();
        w.finish().unwrap();
    }
    let npy = d.0.join("all.npy");
    assert_eq!(export_npy(&d.0, None, &npy).unwrap(), (2, [1, 4]));
    let bytes = std::fs::read(&npy).unwrap();
    let data: Vec<f32> = bytes[bytes.len() - 32..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(
        export_npy(&d.0, Some("part1of2-"), &npy).unwrap(),
        (1, [1, 4])
    );
    let e = export_npy(&d.0, Some("part5of9-"), &npy).unwrap_err();
    assert!(e.to_string().contains("part5of9-"), "{e}");
}

/// Seeded AlexNet weights in `dir`, for runs of the real binary.
fn alexnet_file(dir: &Path) -> PathBuf {
    let p = dir.join("alexnet.safetensors");
    let meta =
        std::collections::HashMap::from([("crosspool.arch".to_string(), "alexnet".to_string())]);
    std::fs::write(
        &p,
        common::seeded_weights_file(crosspool::model::Arch::Alexnet, Some(meta)),
    )
    .unwrap();
    p
}

/// `extract --json --size 67` of `inputs` into `out` (extra flags first), run in `cwd`:
/// (exit status, summary or stderr).
fn extract_json(
    cwd: &Path,
    weights: &Path,
    out: &Path,
    extra: &[&str],
    inputs: &[&std::ffi::OsStr],
) -> (Option<i32>, serde_json::Value, String) {
    let r = crosspool_cmd()
        .current_dir(cwd)
        .args(["extract", "--quiet", "--json", "--size", "67"])
        .args(extra)
        .arg("--weights")
        .arg(weights)
        .arg("--out")
        .arg(out)
        .args(inputs)
        .output()
        .unwrap();
    let summary = serde_json::from_slice(&r.stdout).unwrap_or_default();
    (
        r.status.code(),
        summary,
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// Two files whose names differ only in bytes that are not UTF-8 get two distinct manifest
/// rows, and a resume knows both are done (they used to share one lossy name, and resume
/// skipped a file never processed).
#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_are_recorded_exactly() {
    use std::os::unix::ffi::OsStrExt;
    let d = temp_dir("non-utf8");
    let weights = alexnet_file(&d.0);
    let photos = d.0.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let names = [&b"caf\xe8.jpg"[..], &b"caf\xe9.jpg"[..]];
    for (n, src) in names.iter().zip(["coffee.jpg", "rocket.jpg"]) {
        let to = photos.join(std::ffi::OsStr::from_bytes(n));
        std::fs::copy(repo(&format!("tests/data/photos/{src}")), to).unwrap();
    }
    let out = d.0.join("out");
    let dir = photos.as_os_str();
    let (code, s, err) = extract_json(&d.0, &weights, &out, &[], &[dir]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(s["ok"], 2);
    let lines = crosspool::store::shards::read_manifest(&out.join("shard-00000.jsonl")).unwrap();
    let got: Vec<PathBuf> = lines.iter().map(|l| l.image_path().unwrap()).collect();
    let want: Vec<PathBuf> = names
        .iter()
        .map(|n| photos.join(std::ffi::OsStr::from_bytes(n)))
        .collect();
    assert_eq!(got, want);
    assert_ne!(lines[0].path, lines[1].path);
    let (code, s, err) = extract_json(&d.0, &weights, &out, &["--resume"], &[dir]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (s["already_done"].clone(), s["processed"].clone()),
        (2.into(), 0.into())
    );
}

/// An image is the same image however its path is spelt (relative, ./, absolute), and a
/// resume that names it another way does not process it again.
#[test]
fn resume_knows_an_image_by_any_spelling() {
    let d = temp_dir("spelling");
    let weights = alexnet_file(&d.0);
    std::fs::create_dir_all(d.0.join("d")).unwrap();
    std::fs::copy(repo("tests/data/photos/coffee.jpg"), d.0.join("d/a.jpg")).unwrap();
    let out = d.0.join("out");
    let os = |s: &str| std::ffi::OsString::from(s);
    let (code, _, err) = extract_json(&d.0, &weights, &out, &[], &[&os("d/a.jpg")]);
    assert_eq!(code, Some(0), "{err}");
    let absolute = d.0.join("d/a.jpg").into_os_string();
    // Named twice in one run, it is extracted once.
    let again = d.0.join("again");
    let (code, s, err) = extract_json(
        &d.0,
        &weights,
        &again,
        &[],
        &[&os("d/a.jpg"), &os("./d/a.jpg"), &absolute],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (s["ok"].clone(), s["duplicates_skipped"].clone()),
        (1.into(), 2.into())
    );
    for spelling in [os("./d/a.jpg"), os("d/../d/a.jpg"), absolute] {
        let (code, s, err) = extract_json(&d.0, &weights, &out, &["--resume"], &[&spelling]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(s["processed"], 0, "{spelling:?} was extracted again");
    }
}

/// Changing the --shard split of a directory would extract images twice: refused, with the
/// reason. The same split goes on.
#[test]
fn a_changed_shard_split_is_refused() {
    let d = temp_dir("split");
    let weights = alexnet_file(&d.0);
    let out = d.0.join("out");
    let photos: Vec<std::ffi::OsString> = ["coffee.jpg", "rocket.jpg", "chelsea.jpg"]
        .iter()
        .map(|p| repo(&format!("tests/data/photos/{p}")).into_os_string())
        .collect();
    let inputs: Vec<&std::ffi::OsStr> = photos.iter().map(|p| p.as_os_str()).collect();
    let (code, _, err) = extract_json(&d.0, &weights, &out, &["--shard", "0/2"], &inputs);
    assert_eq!(code, Some(0), "{err}");
    for other in [&["--shard", "0/4", "--resume"][..], &["--resume"]] {
        let (code, _, err) = extract_json(&d.0, &weights, &out, other, &inputs);
        assert_eq!(code, Some(1), "{other:?} was let in");
        assert!(err.contains("extracted twice"), "{err}");
    }
    let (code, s, err) = extract_json(&d.0, &weights, &out, &["--shard", "1/2"], &inputs);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(s["processed"], 1);
}

/// Every case above in one directory beside good images: the run finishes, each good image
/// is stored exactly once, every bad file named like an image is a failed row with its
/// reason, and FIFOs and devices met in the walk are skipped without blocking.
#[cfg(unix)]
#[test]
fn a_hostile_directory_finishes_and_accounts_for_every_good_image_once() {
    use std::os::unix::ffi::OsStrExt;
    let d = temp_dir("hostile-dir");
    let weights = alexnet_file(&d.0);
    let dir = d.0.join("in");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let photo = |name: &str| repo(&format!("tests/data/photos/{name}"));
    // Good images, one of them under a name that is not UTF-8.
    std::fs::copy(photo("coffee.jpg"), dir.join("good1.jpg")).unwrap();
    std::fs::copy(photo("rocket.jpg"), dir.join("sub/good2.jpg")).unwrap();
    std::fs::copy(
        photo("chelsea.jpg"),
        dir.join(std::ffi::OsStr::from_bytes(b"good3-\xe9.jpg")),
    )
    .unwrap();
    // Bad ones.
    let chelsea = std::fs::read(photo("chelsea.jpg")).unwrap();
    std::fs::write(dir.join("cut.jpg"), &chelsea[..chelsea.len() / 2]).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.jpg")).unwrap();
    std::os::unix::fs::symlink("nowhere.jpg", dir.join("dangling.jpg")).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(dir.join("pipe.jpg"))
        .status()
        .unwrap()
        .success());
    // Loops back to the top, twice.
    std::os::unix::fs::symlink(".", dir.join("x")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("sub/y")).unwrap();

    let out = d.0.join("out");
    // The device link is skipped by the walk, and a failed row when named directly.
    let zero = dir.join("zero.jpg");
    let (code, s, err) = extract_json(
        &d.0,
        &weights,
        &out,
        &[],
        &[dir.as_os_str(), zero.as_os_str()],
    );
    assert_eq!(code, Some(2), "some images failed: {err}");
    assert_eq!(
        (s["ok"].clone(), s["failed"].clone()),
        (3.into(), 3.into()),
        "{s}"
    );
    let lines = crosspool::store::shards::read_manifest(&out.join("shard-00000.jsonl")).unwrap();
    let ok: Vec<String> = lines
        .iter()
        .filter(|l| l.ok_row().is_some())
        .map(|l| l.path.clone())
        .collect();
    let name = |p: &str| dir.join(p).display().to_string();
    let mut want = vec![
        name("good1.jpg"),
        format!("{}/good3-\\xe9.jpg", dir.display()),
        name("sub/good2.jpg"),
    ];
    want.sort();
    let mut got = ok.clone();
    got.sort();
    assert_eq!(got, want);
    let failed: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l.ok_row().is_none())
        .map(|l| (l.path.clone(), l.reason.clone().unwrap_or_default()))
        .collect();
    for (file, says) in [
        ("cut.jpg", "truncated"),
        ("zero.jpg", "not a regular file"),
        ("dangling.jpg", "No such file"),
    ] {
        assert!(
            failed
                .iter()
                .any(|(p, r)| p == &name(file) && r.contains(says)),
            "{file}: {failed:?}"
        );
    }
}

/// Files crosspool wrote are called what they are in errors, not "weights file".
#[test]
fn damaged_indexes_and_shards_are_named_as_such() {
    let d = temp_dir("damaged-index");
    std::fs::write(d.0.join("index.safetensors"), b"not safetensors at all").unwrap();
    let e = crosspool::retrieval::RetrievalIndex::load(&d.0)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("index ") && !e.contains("weights"), "{e}");
    let parts = d.0.join("parts");
    let (mut w, _) =
        crosspool::store::writer::ShardWriter::open(&parts, "", &sum_settings(), 10, false)
            .unwrap();
    w.push(crosspool::store::writer::Row::Failed {
        source: crosspool::input::ImageSource::File("x.jpg".into()),
        reason: "test".into(),
    })
    .unwrap();
    w.finish().unwrap();
    std::fs::write(parts.join("shard-00000.safetensors"), b"garbage").unwrap();
    let e =
        crosspool::retrieval::RetrievalIndex::build(&parts, crosspool::retrieval::Storage::Auto)
            .unwrap_err()
            .to_string();
    assert!(
        e.starts_with("feature shard ") && !e.contains("weights"),
        "{e}"
    );
}

/// A window whose single-image feature cannot fit the device says to shrink the window or
/// reduce the features, not to use a smaller batch.
#[test]
fn an_oversized_window_says_what_to_change() {
    use crosspool::features::{FeatureSpec, Representation};
    use crosspool::model::{Arch, ModelWeights};
    use crosspool::pooling::{LocalWindow, Normalization};
    let ctx = common::gpu();
    let arch = Arch::Alexnet;
    let w = ModelWeights::from_bytes(
        &common::seeded_weights_file(arch, None),
        Path::new("seeded"),
        Some(arch),
        None,
    )
    .unwrap();
    // The smallest odd window whose feature (256 rows of side^2 x 256 values) is over the
    // device's buffer limit.
    let fits = |side: u64| 256 * side * side * 256 * 4 <= ctx.limits.max_buffer_size;
    let side = (1..).step_by(2).find(|&s| !fits(s)).unwrap() as usize;
    let spec = FeatureSpec {
        repr: Representation::cross_layer("conv4", "conv5", LocalWindow::new(side, side).unwrap()),
        norm: Normalization::PAPER,
    };
    let ex = crosspool::pipeline::Extractor::new(ctx, &w, spec, None).unwrap();
    let e = match ex.workspace(ctx, crosspool::shape::Shape4::new(1, 67, 67, 3)) {
        Ok(_) => panic!("a {side}x{side} window's feature fit one buffer"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("--window") && !e.contains("batch"), "{e}");
}

/// A resume from another working directory (a Slurm or Kubernetes requeue) knows the images
/// the first run recorded by relative paths, and so does a failed image without an
/// identity of its own (a dangling link): nothing is extracted twice.
#[cfg(unix)]
#[test]
fn resume_from_another_working_directory_extracts_nothing_twice() {
    let d = temp_dir("resume-cwd");
    let weights = alexnet_file(&d.0);
    let imgs = d.0.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for p in ["coffee.jpg", "rocket.jpg"] {
        std::fs::copy(repo(&format!("tests/data/photos/{p}")), imgs.join(p)).unwrap();
    }
    std::os::unix::fs::symlink(d.0.join("nowhere.jpg"), imgs.join("dangling.jpg")).unwrap();
    let out = d.0.join("out");
    let (code, s, err) = extract_json(&d.0, &weights, &out, &[], &[imgs.file_name().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!((s["ok"].clone(), s["failed"].clone()), (2.into(), 1.into()));
    let root = Path::new("/");
    let (code, s, err) = extract_json(root, &weights, &out, &["--resume"], &[imgs.as_os_str()]);
    assert!(code == Some(0) || code == Some(2), "{err}");
    assert_eq!(
        (s["already_done"].clone(), s["processed"].clone()),
        (3.into(), 0.into()),
        "{s}"
    );
}

/// A resume after the PCA file behind the same path was refitted is refused, as one after
/// the weights changed: the run would mix features of two projections.
#[test]
fn resume_refuses_a_changed_pca() {
    let d = temp_dir("changed-pca");
    let weights = alexnet_file(&d.0);
    let pca = d.0.join("pca.safetensors");
    let fit = |images: &[&str]| {
        let mut c = crosspool_cmd();
        c.args(["fit-pca", "--size", "67", "--layer", "conv4", "--weights"])
            .arg(&weights)
            .arg("--out")
            .arg(&pca);
        for p in images {
            c.arg(repo(&format!("tests/data/photos/{p}")));
        }
        let r = c.output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    };
    fit(&["coffee.jpg", "rocket.jpg", "chelsea.jpg"]);
    let out = d.0.join("out");
    let photo = |p: &str| repo(&format!("tests/data/photos/{p}")).into_os_string();
    let pca_flag = ["--pca", pca.to_str().unwrap()];
    let (code, _, err) = extract_json(&d.0, &weights, &out, &pca_flag, &[&photo("coffee.jpg")]);
    assert_eq!(code, Some(0), "{err}");
    fit(&["astronaut.jpg", "rocket.jpg"]);
    let resume = ["--resume", "--pca", pca.to_str().unwrap()];
    let (code, _, err) = extract_json(&d.0, &weights, &out, &resume, &[&photo("rocket.jpg")]);
    assert_ne!(code, Some(0), "resumed with another PCA");
    assert!(err.contains("content changed"), "{err}");
}

/// Parts of one --out extracted with other settings are refused up front, naming what
/// differs: their shards would be read as one set of features.
#[test]
fn parts_with_other_settings_are_refused() {
    let d = temp_dir("part-settings");
    let weights = alexnet_file(&d.0);
    let out = d.0.join("out");
    let photos: Vec<std::ffi::OsString> = ["coffee.jpg", "rocket.jpg"]
        .iter()
        .map(|p| repo(&format!("tests/data/photos/{p}")).into_os_string())
        .collect();
    let inputs: Vec<&std::ffi::OsStr> = photos.iter().map(|p| p.as_os_str()).collect();
    let (code, _, err) = extract_json(&d.0, &weights, &out, &["--shard", "0/2"], &inputs);
    assert_eq!(code, Some(0), "{err}");
    let gram = ["--shard", "1/2", "--pooling", "gram", "--layers", "conv5"];
    let (code, _, err) = extract_json(&d.0, &weights, &out, &gram, &inputs);
    assert_eq!(code, Some(1), "a part with other settings was let in");
    assert!(err.contains("pooling") && err.contains("gram"), "{err}");
    assert!(
        !out.join("extract-part1of2-.json").exists(),
        "the refused part left its settings"
    );
    // The same settings go on.
    let (code, s, err) = extract_json(&d.0, &weights, &out, &["--shard", "1/2"], &inputs);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(s["processed"], 1);
}

/// A shard whose images all failed reads as zero rows: `index` takes the rest of the
/// directory (it used to say the shards' guide_mean did not match).
#[test]
fn a_shard_of_failed_images_reads_as_no_rows() {
    let d = temp_dir("failed-shard");
    let weights = alexnet_file(&d.0);
    let imgs = d.0.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    // Walked in name order: the first shard of two holds the two empty files.
    std::fs::write(imgs.join("a.jpg"), b"").unwrap();
    std::fs::write(imgs.join("b.jpg"), b"").unwrap();
    for (p, to) in [("coffee.jpg", "c.jpg"), ("rocket.jpg", "d.jpg")] {
        std::fs::copy(repo(&format!("tests/data/photos/{p}")), imgs.join(to)).unwrap();
    }
    let out = d.0.join("out");
    let rows = ["--shard-rows", "2"];
    let (code, s, err) = extract_json(&d.0, &weights, &out, &rows, &[imgs.as_os_str()]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!((s["ok"].clone(), s["failed"].clone()), (2.into(), 2.into()));
    let r = crosspool_cmd()
        .args(["index", "--json", "--out"])
        .arg(d.0.join("index"))
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    let index = crosspool::retrieval::RetrievalIndex::load(&d.0.join("index")).unwrap();
    assert_eq!(index.len(), 2);
    assert!(
        index.guide_mean.is_some(),
        "the layer t+1 means of the two images are kept"
    );
}

/// Values no run can use are refused when the command line is read (exit 64), before any
/// file is opened: with weights that do not exist, a later check would exit 1 instead.
#[test]
fn bad_numbers_are_refused_before_any_work() {
    let d = temp_dir("bad-numbers");
    let missing = d.0.join("missing.safetensors");
    let w = missing.to_str().unwrap();
    let o = d.0.join("o");
    let o = o.to_str().unwrap();
    let img = d.0.join("img.jpg");
    let img = img.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["fit-pca", "--dims", "0", "--weights", w, "-o", o, img],
        &["fit-pca", "--batch", "0", "--weights", w, "-o", o, img],
        &[
            "train-aconv",
            "--filters",
            "0",
            "--labels",
            "folder",
            "--weights",
            w,
            "-o",
            o,
            img,
        ],
        &[
            "train-aconv",
            "--batch",
            "0",
            "--labels",
            "folder",
            "--weights",
            w,
            "-o",
            o,
            img,
        ],
        &[
            "train-aconv",
            "--epochs",
            "0",
            "--labels",
            "folder",
            "--weights",
            w,
            "-o",
            o,
            img,
        ],
        &[
            "train-aconv",
            "--momentum",
            "5",
            "--labels",
            "folder",
            "--weights",
            w,
            "-o",
            o,
            img,
        ],
        &[
            "train-aconv",
            "--learning-rate",
            "nan",
            "--labels",
            "folder",
            "--weights",
            w,
            "-o",
            o,
            img,
        ],
        &[
            "train-aconv",
            "--weight-decay",
            "inf",
            "--labels",
            "folder",
            "--weights",
            w,
            "-o",
            o,
            img,
        ],
        &["train-classifier", "--c", "0", "-o", o, w],
        &["train-classifier", "--c", "nan", "-o", o, w],
        &["train-classifier", "--c", "inf", "-o", o, w],
        &["train-classifier", "--c-grid", "1,-1", "-o", o, w],
        &["train-classifier", "--folds", "1", "-o", o, w],
        &["extract", "--batch", "0", "--weights", w, "-o", o, img],
        &["extract", "--in-flight", "0", "--weights", w, "-o", o, img],
        &["extract", "--shard-rows", "0", "--weights", w, "-o", o, img],
        &["bench", "--batch", "0", "--weights", w],
        &["bench", "--iters", "0", "--weights", w],
        &["bench", "--in-flight", "0", "--weights", w],
        &["search", "--top", "0", "--index", o, "--query", img],
    ];
    for args in cases {
        let r = crosspool_cmd().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("invalid value"), "{args:?}: {err}");
    }
}

/// An output file in a folder that does not exist yet: the folder is made up front, as
/// `index` makes its own, rather than the run failing after its work.
#[test]
fn output_files_get_their_folder() {
    let d = temp_dir("out-folder");
    let weights = alexnet_file(&d.0);
    let out = d.0.join("not/yet/pca.safetensors");
    let r = crosspool_cmd()
        .args(["fit-pca", "--size", "67", "--layer", "conv4", "--weights"])
        .arg(&weights)
        .arg("-o")
        .arg(&out)
        .arg(repo("tests/data/photos/coffee.jpg"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.is_file());
}

/// Runs crosspool with `args` in `cwd`: (exit status, stderr).
fn run_in(cwd: &Path, args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let r = crosspool_cmd()
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    (
        r.status.code(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// Nothing to index or evaluate is an error, not an empty result that exits 0; and a
/// classifier applied to features of another size says which side is which.
#[test]
fn empty_results_are_refused_and_mismatches_name_their_sides() {
    let d = temp_dir("empty-results");
    let weights = alexnet_file(&d.0);
    let (good, bad) = (d.0.join("good"), d.0.join("bad"));
    for (class, photos) in [
        ("a", ["coffee.jpg", "rocket.jpg"]),
        ("b", ["chelsea.jpg", "astronaut.jpg"]),
    ] {
        std::fs::create_dir_all(good.join(class)).unwrap();
        std::fs::create_dir_all(bad.join(class)).unwrap();
        for p in photos {
            std::fs::copy(
                repo(&format!("tests/data/photos/{p}")),
                good.join(class).join(p),
            )
            .unwrap();
            std::fs::write(bad.join(class).join(p), b"").unwrap();
        }
    }
    let os = |s: &str| std::ffi::OsString::from(s);
    let extract = |dir: &Path, out: &str, size: &str| {
        let r = crosspool_cmd()
            .args([
                "extract",
                "--quiet",
                "--labels",
                "folder",
                "--size",
                size,
                "--weights",
            ])
            .arg(&weights)
            .arg("--out")
            .arg(d.0.join(out))
            .arg(dir)
            .output()
            .unwrap();
        r.status.code()
    };
    assert_eq!(extract(&good, "good67", "67"), Some(0));
    assert_eq!(extract(&good, "good75", "75"), Some(0));
    assert_eq!(extract(&bad, "bad67", "67"), Some(2));
    let p = |s: &str| d.0.join(s).into_os_string();
    let (code, err) = run_in(&d.0, &[&os("index"), &os("-o"), &p("idx"), &p("bad67")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no image") && !d.0.join("idx").exists(),
        "{err}"
    );
    let clf = p("c.clf");
    let (code, err) = run_in(
        &d.0,
        &[
            &os("train-classifier"),
            &os("--c"),
            &os("1"),
            &os("-o"),
            &clf,
            &p("good67"),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run_in(
        &d.0,
        &[&os("evaluate"), &os("--classifier"), &clf, &p("bad67")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nothing to evaluate"), "{err}");
    let (code, err) = run_in(
        &d.0,
        &[&os("evaluate"), &os("--classifier"), &clf, &p("good75")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("size: the classifier's 67, the features' 75"),
        "{err}"
    );
    // Training on nothing says so (it said "one class only ('')").
    let none = [os("train-classifier"), os("-o"), p("none.clf"), p("bad67")];
    let (code, err) = run_in(
        &d.0,
        &none.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nothing to train on"), "{err}");
    // search --json gives every query a line, one that could not be read included.
    let index = [os("index"), os("-o"), p("idx"), p("good67")];
    let (code, err) = run_in(
        &d.0,
        &index.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(0), "{err}");
    let r = crosspool_cmd()
        .current_dir(&d.0)
        .args(["search", "--json", "--index"])
        .arg(p("idx"))
        .arg("--query")
        .arg(good.join("a/coffee.jpg"))
        .arg(bad.join("a/coffee.jpg"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().any(|l| l["failed"].is_string()), "{out}");
}

/// A resume says how many images failed in earlier runs and exits 2 while any did;
/// `--retry-failed` tries them again (a tar still being written, a file since repaired),
/// and each image keeps exactly one manifest line.
#[test]
fn resume_counts_earlier_failures_and_can_retry_them() {
    let d = temp_dir("retry-failed");
    let weights = alexnet_file(&d.0);
    let imgs = d.0.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::copy(repo("tests/data/photos/coffee.jpg"), imgs.join("a.jpg")).unwrap();
    std::fs::write(imgs.join("b.jpg"), b"").unwrap();
    let out = d.0.join("out");
    let dir = [imgs.as_os_str()];
    let (code, s, err) = extract_json(&d.0, &weights, &out, &[], &dir);
    assert_eq!((code, s["failed"].clone()), (Some(2), 1.into()), "{err}");
    let (code, s, err) = extract_json(&d.0, &weights, &out, &["--resume"], &dir);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        (s["processed"].clone(), s["failed_earlier"].clone()),
        (0.into(), 1.into())
    );
    std::fs::copy(repo("tests/data/photos/rocket.jpg"), imgs.join("b.jpg")).unwrap();
    let retry = ["--resume", "--retry-failed"];
    let (code, s, err) = extract_json(&d.0, &weights, &out, &retry, &dir);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (s["processed"].clone(), s["ok"].clone()),
        (1.into(), 1.into())
    );
    let mut lines = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            lines.extend(crosspool::store::shards::read_manifest(&p).unwrap());
        }
    }
    let b: Vec<_> = lines.iter().filter(|l| l.path.ends_with("b.jpg")).collect();
    assert_eq!(b.len(), 1, "{lines:?}");
    assert!(b[0].ok_row().is_some());
}

/// export-npy reads the parts of a directory as one set of features only if their shards
/// were extracted alike (a directory from before extract refused such parts).
#[test]
fn export_npy_refuses_parts_of_other_settings() {
    use crosspool::store::writer::{export_npy, Row, RowData, ShardWriter};
    let d = temp_dir("npy-mixed");
    for (part, prefix) in ["part0of2-", "part1of2-"].iter().enumerate() {
        let s = crosspool::store::ExtractSettings {
            size: 224 + 32 * part as u32,
            ..sum_settings()
        };
        let (mut w, _) = ShardWriter::open(&d.0, prefix, &s, 10, false).unwrap();
        w.push(Row::Ok {
            source: crosspool::input::ImageSource::File(format!("{part}.jpg").into()),
            values: RowData::F32(vec![part as f32; 4]),
            guide_mean: None,
        })
        .unwrap();
        w.finish().unwrap();
        // As an older crosspool left it: the part's settings file is not checked there.
        std::fs::remove_file(d.0.join(format!("extract-{prefix}.json"))).unwrap();
    }
    let npy = d.0.join("all.npy");
    let e = export_npy(&d.0, None, &npy).unwrap_err().to_string();
    assert!(e.contains("size"), "{e}");
    assert!(!npy.exists());
}

/// A size whose activations cannot fit the device is refused before any work, with the
/// numbers (the CPU backend aborted on the failed allocation, exit 134).
#[test]
fn a_size_too_large_for_the_device_is_refused_up_front() {
    let d = temp_dir("too-large");
    let weights = alexnet_file(&d.0);
    for device in ["cpu", "gpu"] {
        let r = crosspool_cmd()
            .args([
                "extract",
                "--quiet",
                "--size",
                "22400",
                "--device",
                device,
                "--weights",
            ])
            .arg(&weights)
            .arg("-o")
            .arg(d.0.join(format!("out-{device}")))
            .arg(repo("tests/data/photos/coffee.jpg"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(64), "{device}: {err}");
        assert!(
            err.contains("GiB") && err.contains("smaller --size"),
            "{device}: {err}"
        );
    }
}

/// `classify` on images extracts them into a scratch directory under `$TMPDIR`; a Ctrl-C, a
/// scheduler's SIGTERM or a closed terminal's SIGHUP removes it (they used to leave gigabytes
/// behind), and the process still ends by that signal.
#[cfg(unix)]
#[test]
fn classify_removes_its_scratch_extraction_when_interrupted() {
    use std::os::unix::process::ExitStatusExt;
    let d = temp_dir("classify-signal");
    let weights = alexnet_file(&d.0);
    let train = d.0.join("train");
    for (class, photos) in [("a", ["coffee", "rocket"]), ("b", ["chelsea", "astronaut"])] {
        std::fs::create_dir_all(train.join(class)).unwrap();
        for p in photos {
            let from = repo(&format!("tests/data/photos/{p}.jpg"));
            std::fs::copy(from, train.join(class).join(format!("{p}.jpg"))).unwrap();
        }
    }
    let feats = d.0.join("feats");
    let extra = ["--labels", "folder"];
    let (code, _, err) = extract_json(&d.0, &weights, &feats, &extra, &[train.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    let clf = d.0.join("clf");
    let r = crosspool_cmd()
        .args(["train-classifier", "--c", "1", "-o"])
        .arg(&clf)
        .arg(&feats)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Enough images that the run is still extracting when the signal comes.
    let many = d.0.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..400 {
        std::fs::copy(
            repo("tests/data/photos/coffee.jpg"),
            many.join(format!("{i}.jpg")),
        )
        .unwrap();
    }
    let scratch_dirs = |tmp: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("crosspool-classify-"))
            })
            .collect()
    };
    for (sig, name) in [(15, "TERM"), (2, "INT"), (1, "HUP")] {
        let tmp = d.0.join(format!("tmp-{name}"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut child = crosspool_cmd()
            .env("TMPDIR", &tmp)
            .args(["classify", "-q", "--device", "cpu", "--classifier"])
            .arg(&clf)
            .arg(&many)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the extraction to have begun writing.
        let start = std::time::Instant::now();
        while scratch_dirs(&tmp).is_empty() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "classify ended before its scratch directory appeared"
            );
            assert!(start.elapsed().as_secs() < 120, "no scratch directory");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let killed = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(sig), "SIG{name}: {status:?}");
        assert!(
            scratch_dirs(&tmp).is_empty(),
            "SIG{name} left {:?}",
            scratch_dirs(&tmp)
        );
    }
}

/// More PCA dimensions than the layer's local feature has are refused before any image goes
/// through the network (the refusal used to come after all of them had).
#[test]
fn fit_pca_refuses_too_many_dimensions_before_the_images() {
    let d = temp_dir("pca-dims");
    let weights = alexnet_file(&d.0);
    let r = crosspool_cmd()
        .args([
            "fit-pca", "--device", "cpu", "--size", "67", "--dims", "100000",
        ])
        .arg("--weights")
        .arg(&weights)
        .arg("-o")
        .arg(d.0.join("pca"))
        .arg(repo("tests/data/photos"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("--dims 100000 is more than the"), "{err}");
    assert!(
        !err.contains("fit-pca:"),
        "the images were read first: {err}"
    );
    assert!(!d.0.join("pca").exists());
}

/// An output directory that is a file is named as such (the error was "File exists").
#[test]
fn an_output_directory_that_is_a_file_says_so() {
    let d = temp_dir("out-is-file");
    let weights = alexnet_file(&d.0);
    let out = d.0.join("out.csv");
    std::fs::write(&out, "path,label\n").unwrap();
    let photo = repo("tests/data/photos/coffee.jpg");
    let (code, _, err) = extract_json(&d.0, &weights, &out, &[], &[photo.as_os_str()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("it is a file, not a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "path,label\n");
}

/// A gzip-compressed tar given by name is a failed row that says it is gzip and what to do
/// (it said "not an image format").
#[test]
fn a_tar_gz_given_by_name_says_it_is_gzip() {
    let d = temp_dir("tar-gz");
    // The gzip magic and a little more: what any .tar.gz starts with.
    let gz = d.0.join("shard.tar.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4]).unwrap();
    let e = decode_rgb(&gz, DecodeLimits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("gzip-compressed") && e.contains("gunzip"), "{e}");
}
