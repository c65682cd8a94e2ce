use super::*;

#[test]
fn keys_split_at_the_first_dot_of_the_file_name() {
    assert_eq!(key_and_field("a/b.c/000.jpg"), Some(("a/b.c/000", "jpg")));
    assert_eq!(key_and_field("x.seg.png"), Some(("x", "seg.png")));
    assert_eq!(key_and_field("noext"), None);
    assert_eq!(key_and_field("dir/.hidden"), None);
    assert!(is_image_field("seg.PNG"));
    assert!(!is_image_field("json"));
}

#[test]
fn checksums_follow_posix() {
    let mut h = tar::Header::new_ustar();
    h.set_path("a.jpg").unwrap();
    h.set_size(3);
    h.set_cksum();
    assert!(checksum_ok(h.as_bytes()));
    assert!(plausible_header(h.as_bytes()));
    let mut bad = *h.as_bytes();
    bad[0] ^= 1;
    assert!(!checksum_ok(&bad));
}

/// A tar of `members` (name, data), as Python's tarfile and GNU tar write them (a GNU
/// long-name header for names over 100 bytes).
fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn index_bytes(bytes: &[u8], name: &str) -> (tempdir::Dir, Vec<TarEntry>) {
    let dir = tempdir::Dir::new(name);
    let path = dir.0.join("shard.tar");
    std::fs::write(&path, bytes).unwrap();
    let entries = index_tar(&path).unwrap();
    (dir, entries)
}

/// A scratch directory removed on drop.
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("crosspool-wds-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn header_offset(bytes: &[u8], name: &str) -> usize {
    (0..bytes.len())
        .step_by(512)
        .find(|&o| bytes[o..].starts_with(name.as_bytes()))
        .unwrap()
}

#[test]
fn a_gzip_compressed_tar_is_named_as_such() {
    let mut bytes = vec![0x1f, 0x8b, 8, 0];
    bytes.extend(tar_of(&[("s/0.jpg", b"jpeg0")]));
    let (_d, e) = index_bytes(&bytes, "gzip");
    assert_eq!(e.len(), 1);
    let why = e[0].problem.as_deref().unwrap_or_default();
    assert!(why.contains("gzip-compressed"), "{why}");
}

#[test]
fn a_repeated_key_starts_a_sample_of_its_own() {
    let bytes = tar_of(&[
        ("d/0.jpg", b"first"),
        ("d/0.cls", b"a"),
        ("d/0.jpg", b"second"),
        ("d/0.cls", b"b"),
    ]);
    let (_d, e) = index_bytes(&bytes, "repeated-key");
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].sidecars["cls"], "a");
    assert_eq!(e[1].sidecars["cls"], "b");
    assert_ne!(e[0].offset, e[1].offset);
}

#[test]
fn members_named_like_images_that_are_not_regular_files_are_failures() {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if kind.is_hard_link() || kind.is_symlink() {
            h.set_link_name("s/0.jpg").unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    };
    add("s/0.jpg", tar::EntryType::Regular, b"jpeg0");
    add("s/1.jpg", tar::EntryType::Link, b"");
    add("s/2.jpg", tar::EntryType::Symlink, b"");
    add("s/3.jpg", tar::EntryType::Fifo, b"");
    add("s/4.jpg", tar::EntryType::Char, b"");
    add("s/dir", tar::EntryType::Directory, b"");
    add("s/5.txt", tar::EntryType::Symlink, b"");
    add("x/.jpg", tar::EntryType::Regular, b"jpeg6");
    let bytes = b.into_inner().unwrap();
    let (_d, e) = index_bytes(&bytes, "not-regular");
    let got: Vec<(String, Option<&str>)> = e
        .iter()
        .map(|e| (e.member.clone().unwrap(), e.problem.as_deref()))
        .collect();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    // Every image-named member is one entry; only the regular ones have no problem.
    assert_eq!(
        names,
        ["s/0.jpg", "s/1.jpg", "s/2.jpg", "s/3.jpg", "s/4.jpg", "x/.jpg"]
    );
    assert!(got[0].1.is_none() && got[5].1.is_none(), "{got:?}");
    for (kind, (name, why)) in ["hard link", "symbolic link", "FIFO", "device"]
        .iter()
        .zip(&got[1..5])
    {
        let why = why.unwrap_or_default();
        assert!(why.contains(kind), "{name}: {why}");
    }
}

#[test]
fn samples_give_one_entry_per_image_with_their_sidecars() {
    let long = format!("{}/000002.jpg", "d".repeat(120));
    let bytes = tar_of(&[
        ("s/000000.jpg", b"jpeg0"),
        ("s/000000.json", br#"{"caption": "a cat", "id": 7}"#),
        ("s/000000.txt", b"a cat"),
        ("s/000001.txt", b"no image in this sample"),
        ("s/000001.seg.png", b"png1"),
        ("s/000001.jpg", b"jpeg1"),
        ("s/000001.cls", b"3"),
        ("README", b"no key"),
        (&long, b"jpeg2"),
        ("s/000003.json", b"{not json"),
        ("s/000003.npy", &[0xff, 0xfe, 0x00]),
        ("s/000003.webp", b"webp3"),
    ]);
    let (_d, e) = index_bytes(&bytes, "samples");
    let names: Vec<_> = e.iter().map(|e| e.member.clone().unwrap()).collect();
    assert_eq!(
        names,
        [
            "s/000000.jpg",
            "s/000001.seg.png",
            "s/000001.jpg",
            long.as_str(),
            "s/000003.webp"
        ]
    );
    assert!(e.iter().all(|e| e.problem.is_none()));
    assert_eq!(e[0].key.as_deref(), Some("s/000000"));
    assert_eq!(e[0].sidecars["json"]["id"], 7);
    assert_eq!(e[0].sidecars["txt"], "a cat");
    assert_eq!(e[1].sidecars, e[2].sidecars);
    assert_eq!(e[2].sidecars["cls"], "3");
    assert!(e[3].sidecars.is_empty());
    assert_eq!(e[4].sidecars["json"], "{not json");
    assert_eq!(e[4].sidecars["npy"]["not_carried"], "not UTF-8 text");
    // Each member's bytes, read in place.
    let read: Vec<_> = e.iter().map(|e| e.read(1 << 20).unwrap()).collect();
    assert_eq!(read, [&b"jpeg0"[..], b"png1", b"jpeg1", b"jpeg2", b"webp3"]);
    assert!(e[0].read(4).unwrap_err().to_string().contains("limit"));
}

#[test]
fn a_corrupt_header_is_recorded_and_the_walk_goes_on() {
    let mut bytes = tar_of(&[
        ("a.jpg", b"aaaa"),
        ("b.jpg", &[7u8; 1500]),
        ("c.jpg", b"cccc"),
    ]);
    let at = header_offset(&bytes, "b.jpg");
    bytes[at + 150] = b'9'; // a checksum digit
    let (_d, e) = index_bytes(&bytes, "corrupt");
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(e[0].member.as_deref(), Some("a.jpg"));
    assert_eq!((e[1].member.as_deref(), e[1].offset), (None, at as u64));
    let why = e[1].problem.as_deref().unwrap();
    assert!(
        why.contains("corrupt tar header") && why.contains("skipped"),
        "{why}"
    );
    assert_eq!(e[2].member.as_deref(), Some("c.jpg"));
    assert_eq!(e[2].read(100).unwrap(), b"cccc");
    assert!(e[1].read(100).unwrap_err().to_string().contains("corrupt"));
}

#[test]
fn a_cut_tar_names_what_it_lost() {
    let whole = tar_of(&[
        ("a.jpg", b"aaaa"),
        ("b.jpg", &[7u8; 1500]),
        ("b.json", b"{}"),
    ]);
    let b_at = header_offset(&whole, "b.jpg");
    let json_at = header_offset(&whole, "b.json");
    // Inside b.jpg's data: b is its own row, failed.
    let (_d, e) = index_bytes(&whole[..b_at + 512 + 700], "cut-data");
    assert_eq!(e.len(), 2);
    assert_eq!(e[1].member.as_deref(), Some("b.jpg"));
    assert!(e[1].problem.as_deref().unwrap().contains("truncated tar"));
    // Inside a sidecar: the image before it keeps its row, the cut is the tar's.
    let (_d, e) = index_bytes(&whole[..json_at + 513], "cut-sidecar");
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[1].problem.is_none());
    assert_eq!(e[2].member, None);
    assert!(e[2].problem.as_deref().unwrap().contains("b.json"));
    // Inside a header, and on a header boundary without the end-of-archive blocks.
    let (_d, e) = index_bytes(&whole[..json_at + 100], "cut-header");
    assert!(e
        .last()
        .unwrap()
        .problem
        .as_deref()
        .unwrap()
        .contains("inside a header"));
    let (_d, e) = index_bytes(&whole[..json_at], "cut-boundary");
    assert_eq!(e.len(), 3);
    assert!(e[2].problem.as_deref().unwrap().contains("end-of-archive"));
    // The whole tar: no problem at all.
    let (_d, e) = index_bytes(&whole, "whole");
    assert_eq!(e.len(), 2);
    assert!(e.iter().all(|e| e.problem.is_none()));
}

#[test]
fn pax_names_are_read() {
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/x.jpg", "p".repeat(150));
    b.append_pax_extensions([("path", long.as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("short.jpg").unwrap();
    h.set_size(3);
    h.set_cksum();
    b.append(&h, &b"abc"[..]).unwrap();
    let (_d, e) = index_bytes(&b.into_inner().unwrap(), "pax");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].member.as_deref(), Some(long.as_str()));
    assert_eq!(e[0].read(10).unwrap(), b"abc");
}
