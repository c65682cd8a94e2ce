//! WebDataset tar shards as `extract` input, run as a user would: every image member a row
//! or a recorded failure, sidecars carried into the manifest, damage accounted for, resume.

mod common;

use common::temp_dir;
use crosspool::classifier::data::FeatureSet;
use crosspool::model::Arch;
use crosspool::store::shards::{read_manifest, ManifestLine, Status};
use std::path::{Path, PathBuf};
use std::process::Command;

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/photos")
            .join(name),
    )
    .unwrap()
}

fn alexnet(dir: &Path) -> PathBuf {
    let weights = dir.join("alexnet.safetensors");
    let meta =
        std::collections::HashMap::from([("crosspool.arch".to_string(), "alexnet".to_string())]);
    let tensors = common::seeded_tensors_with(Arch::Alexnet, false);
    std::fs::write(&weights, common::safetensors_bytes(&tensors, Some(meta))).unwrap();
    weights
}

/// A tar of `members`, as Python's tarfile (img2dataset) writes one.
fn tar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn header_offset(bytes: &[u8], name: &str) -> usize {
    (0..bytes.len())
        .step_by(512)
        .find(|&o| bytes[o..].starts_with(name.as_bytes()))
        .unwrap()
}

/// Every manifest line in `dir`, in shard order.
fn lines(dir: &Path) -> Vec<ManifestLine> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    shards.sort();
    shards
        .iter()
        .flat_map(|p| read_manifest(p).unwrap())
        .collect()
}

fn extract(weights: &Path, out: &Path, extra: &[&str], inputs: &[&Path]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args(["extract", "-q", "--json", "--device", "cpu", "--size", "96"])
        .args(["--batch", "2", "--shard-rows", "3", "--weights"])
        .arg(weights)
        .args(extra)
        .arg("-o")
        .arg(out)
        .args(inputs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.is_empty() || o.status.code() == Some(2), "{err}");
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn a_damaged_shard_is_fully_accounted_for_and_resumes() {
    let tmp = temp_dir("wds-damaged");
    let dir = &tmp.0;
    let weights = alexnet(dir);
    let mut bytes = tar_of(&[
        ("s/000000.jpg", photo("astronaut.jpg")),
        (
            "s/000000.json",
            br#"{"url": "http://x/a.jpg", "width": 512}"#.to_vec(),
        ),
        ("s/000000.txt", b"an astronaut".to_vec()),
        ("s/000001.jpg", b"\xff\xd8\xff not really a jpeg".to_vec()),
        ("s/000001.cls", b"3".to_vec()),
        ("s/000002.jpg", photo("chelsea.jpg")),
        ("s/000003.jpg", photo("coffee.jpg")),
        ("s/000004.jpg", photo("rocket.jpg")),
        ("s/000005.jpg", photo("astronaut.jpg")),
    ]);
    // 000003's header damaged, and the tar cut inside 000005's data.
    let damaged = header_offset(&bytes, "s/000003.jpg");
    bytes[damaged + 150] ^= 0x01;
    let cut = header_offset(&bytes, "s/000005.jpg");
    bytes.truncate(cut + 512 + 1000);
    let tar = dir.join("shard-000.tar");
    std::fs::write(&tar, &bytes).unwrap();

    let out = dir.join("feats");
    let (code, summary) = extract(&weights, &out, &[], &[&tar]);
    assert_eq!(code, 2, "some members failed: {summary}");
    let got = lines(&out);
    let names: Vec<String> = got.iter().map(ManifestLine::name).collect();
    let t = tar.display().to_string();
    assert_eq!(
        names,
        [
            format!("{t}/s/000000.jpg"),
            format!("{t}/s/000001.jpg"),
            format!("{t}/s/000002.jpg"),
            format!("{t} at byte {damaged}"),
            format!("{t}/s/000004.jpg"),
            format!("{t}/s/000005.jpg"),
        ]
    );
    let status: Vec<Status> = got.iter().map(|l| l.status).collect();
    use Status::{Failed, Ok};
    assert_eq!(status, [Ok, Failed, Ok, Failed, Ok, Failed]);
    assert!(got.iter().all(|l| l.path == t));
    // Sidecars, keys and offsets.
    let side = got[0].sidecars.as_ref().unwrap();
    assert_eq!(side["json"]["width"], 512);
    assert_eq!(side["txt"], "an astronaut");
    assert_eq!(got[1].sidecars.as_ref().unwrap()["cls"], "3");
    assert_eq!(got[2].sidecars, None);
    assert_eq!(got[0].key.as_deref(), Some("s/000000"));
    assert_eq!(got[3].offset, Some(damaged as u64));
    let reason = |i: usize| got[i].reason.clone().unwrap();
    assert!(reason(3).contains("corrupt tar header"), "{}", reason(3));
    assert!(reason(5).contains("truncated tar"), "{}", reason(5));

    // A member's feature is that of the same image as a file, bit for bit.
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for n in ["astronaut.jpg", "chelsea.jpg", "rocket.jpg"] {
        std::fs::write(files.join(n), photo(n)).unwrap();
    }
    let direct = dir.join("direct");
    let (code, _) = extract(&weights, &direct, &[], &[&files]);
    assert_eq!(code, 0);
    let (a, b) = (
        FeatureSet::read(&out).unwrap(),
        FeatureSet::read(&direct).unwrap(),
    );
    assert_eq!(a.len(), 3);
    // astronaut, chelsea, rocket in both (the directory walk sorts by name).
    assert_eq!(a.x.len(), b.x.len());
    assert!(a
        .x
        .iter()
        .zip(&b.x)
        .all(|(p, q)| p.to_bits() == q.to_bits()));

    // Resume with a second shard: only its images are new; nothing is repeated.
    let tar2 = dir.join("shard-001.tar");
    std::fs::write(
        &tar2,
        tar_of(&[
            ("t/0.jpg", photo("coffee.jpg")),
            ("t/0.json", b"[1, 2]".to_vec()),
        ]),
    )
    .unwrap();
    // The damaged members failed before and are not retried: still exit 2, counted.
    let (code, summary) = extract(&weights, &out, &["--resume"], &[&tar, &tar2]);
    assert_eq!(code, 2, "{summary}");
    let s: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        (s["already_done"].as_u64(), s["processed"].as_u64()),
        (Some(6), Some(1))
    );
    assert_eq!(s["failed_earlier"].as_u64(), Some(3));
    let after = lines(&out);
    assert_eq!(after.len(), 7);
    assert_eq!(after[6].name(), format!("{}/t/0.jpg", tar2.display()));
    assert_eq!(
        after[6].sidecars.as_ref().unwrap()["json"],
        serde_json::json!([1, 2])
    );
    // A tar listed twice is read once.
    let again = dir.join("again");
    let (_, summary) = extract(&weights, &again, &[], &[&tar2, &tar2]);
    let s: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        (s["duplicates_skipped"].as_u64(), s["ok"].as_u64()),
        (Some(1), Some(1))
    );
}

/// The first `sh` block after `marker` in docs/cli/extract.md: its command lines.
fn readme_commands(marker: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli/extract.md"))
            .unwrap();
    let after = &readme[readme
        .find(marker)
        .expect("docs/cli/extract.md marks its tested block")..];
    let block = after.split("```sh\n").nth(1).unwrap();
    let block = &block[..block.find("```").unwrap()];
    block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn the_documented_commands_for_shards_and_devices_run_as_written() {
    let tmp = temp_dir("wds-readme");
    let dir = &tmp.0;
    // `W` is the docs' name for the weights file.
    std::fs::rename(alexnet(dir), dir.join("W")).unwrap();
    std::fs::create_dir_all(dir.join("shards")).unwrap();
    let photos = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"];
    let members = |k: usize| -> Vec<String> { (0..2).map(|i| format!("{k}{i}.jpg")).collect() };
    for k in 0..3 {
        let mut m = Vec::new();
        for (i, name) in members(k).into_iter().enumerate() {
            m.push((name.clone(), photo(photos[(k + i) % 4])));
            m.push((
                name.replace(".jpg", ".txt"),
                format!("caption {k}{i}").into_bytes(),
            ));
        }
        let refs: Vec<(&str, Vec<u8>)> = m.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        std::fs::write(dir.join(format!("shards/{k:05}.tar")), tar_of(&refs)).unwrap();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_crosspool")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let commands = readme_commands("run as written by tests/webdataset.rs");
    assert_eq!(commands.len(), 3, "{commands:?}");
    let mut processed = Vec::new();
    for c in &commands {
        let o = Command::new("sh")
            .arg("-c")
            .arg(c.replacen("crosspool extract", "crosspool extract -q --json", 1))
            .current_dir(dir)
            .env("PATH", &path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{c}: {err}");
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        processed.push(s["processed"].as_u64().unwrap());
    }
    // Two shards, then only the third, then all three on every GPU.
    assert_eq!(processed, [4, 2, 6]);
    let want: Vec<String> = (0..3)
        .flat_map(|k| {
            members(k)
                .into_iter()
                .map(move |m| format!("{k:05}.tar/{m}"))
        })
        .collect();
    for out in ["feats", "feats-gpus"] {
        let got = lines(&dir.join(out));
        assert_eq!(got.len(), 6);
        for (line, want) in got.iter().zip(&want) {
            assert!(line.name().ends_with(want), "{} {want}", line.name());
            assert_eq!(line.status, Status::Ok);
            let caption = want.trim_end_matches(".jpg").rsplit('/').next().unwrap();
            let caption = format!("caption {}", &caption[caption.len() - 2..]);
            assert_eq!(line.sidecars.as_ref().unwrap()["txt"], caption.as_str());
        }
    }
}

#[test]
fn labels_come_from_a_samples_sidecar() {
    let tmp = temp_dir("wds-labels");
    let dir = &tmp.0;
    let weights = alexnet(dir);
    let sample = |k: &str, photo_name: &str, side: &[(&str, &[u8])]| {
        let mut m = vec![(format!("a/{k}.jpg"), photo(photo_name))];
        m.extend(side.iter().map(|(f, v)| (format!("a/{k}.{f}"), v.to_vec())));
        m
    };
    let mut members = sample("0", "astronaut.jpg", &[("cls", b"cat\n")]);
    let labelled_json = [
        sample(
            "1",
            "chelsea.jpg",
            &[("cls", b"dog"), ("json", br#"{"label": "hound", "id": 5}"#)],
        ),
        sample("2", "coffee.jpg", &[("json", br#"{"label": 7}"#)]),
    ]
    .concat();
    members.extend(labelled_json.iter().cloned());
    let write = |name: &str, m: &[(String, Vec<u8>)]| {
        let refs: Vec<(&str, Vec<u8>)> = m.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let path = dir.join(name);
        std::fs::write(&path, tar_of(&refs)).unwrap();
        path
    };
    let all = write("all.tar", &members);
    // Every image must have a label: the one without a .cls is named.
    let o = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args([
            "extract",
            "-q",
            "--device",
            "cpu",
            "--size",
            "96",
            "--labels",
            "sidecar:cls",
        ])
        .arg("--weights")
        .arg(&weights)
        .arg("-o")
        .arg(dir.join("refused"))
        .arg(&all)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1 of 3 images have no label in the sidecar .cls") && err.contains("a/2.jpg"),
        "{err}"
    );
    // A key of the JSON sidecar; numbers are labels too. The .cls text is trimmed.
    let json = write("json.tar", &labelled_json);
    let out = dir.join("json");
    let (code, _) = extract(
        &weights,
        &out,
        &["--labels", "sidecar:json:label"],
        &[&json],
    );
    assert_eq!(code, 0);
    let set = FeatureSet::read(&out).unwrap();
    assert_eq!(
        set.labels,
        [Some("hound".to_string()), Some("7".to_string())]
    );
    let out = dir.join("cls");
    let first_two = write("two.tar", &members[..members.len() - 3]);
    let (code, _) = extract(&weights, &out, &["--labels", "sidecar:cls"], &[&first_two]);
    assert_eq!(code, 0);
    let set = FeatureSet::read(&out).unwrap();
    assert_eq!(
        set.labels,
        [Some("cat".to_string()), Some("dog".to_string())]
    );
}

/// A label sidecar over the size limit is named as such, not as a missing label.
#[test]
fn a_label_sidecar_too_large_to_read_says_so() {
    let d = temp_dir("wds-big-label");
    let weights = alexnet(&d.0);
    let tar = d.0.join("big.tar");
    std::fs::write(
        &tar,
        tar_of(&[
            ("d/0.jpg", photo("coffee.jpg")),
            ("d/0.cls", vec![b'a'; (1 << 20) + 1]),
        ]),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args([
            "extract",
            "-q",
            "--device",
            "cpu",
            "--size",
            "96",
            "--labels",
            "sidecar:cls",
        ])
        .arg("--weights")
        .arg(&weights)
        .arg("-o")
        .arg(d.0.join("out"))
        .arg(&tar)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("over the sidecar size limit"), "{err}");
}
