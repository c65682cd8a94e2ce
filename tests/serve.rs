//! `crosspool serve` over HTTP: answers equal `crosspool search`'s, concurrent requests get
//! their own answers, bad uploads and bad numbers are refused with reasons, and no request
//! reads a file outside the image root.

mod common;

use common::{repo, run_ok, temp_dir, TempDir};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

const SIZE: &str = "96";

fn weights() -> String {
    repo("weights/vgg16_hed.safetensors").display().to_string()
}

/// The image root (copies of tests/data/retrieval without the query images, plus a link to
/// a file outside it) and its index, built once.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn root(&self) -> PathBuf {
        self.dir.0.join("root")
    }
    fn index(&self) -> PathBuf {
        self.dir.0.join("index")
    }
}

/// Queries, not in the index; each has three relevant images in it.
const QUERIES: [&str; 4] = ["astronaut.jpg", "camera.jpg", "chelsea.jpg", "coffee.jpg"];

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = temp_dir("serve");
        let root = dir.0.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let mut listed = Vec::new();
        for e in std::fs::read_dir(repo("tests/data/retrieval")).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if !name.ends_with(".jpg") || QUERIES.contains(&name.as_str()) {
                continue;
            }
            let to = root.join(&name);
            std::fs::copy(&p, &to).unwrap();
            listed.push(to);
        }
        // One image in a subdirectory with a space in its name: URLs are encoded.
        let spaced = root.join("sub/brick copy.jpg");
        std::fs::copy(repo("tests/data/retrieval/brick.jpg"), &spaced).unwrap();
        listed.push(spaced);
        std::fs::write(dir.0.join("secret.txt"), b"not for clients").unwrap();
        std::fs::copy(
            repo("tests/data/retrieval/camera.jpg"),
            dir.0.join("outside.jpg"),
        )
        .unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.0.join("outside.jpg"), root.join("escape.jpg")).unwrap();
        let list = dir.0.join("list.txt");
        let text: Vec<String> = listed.iter().map(|p| p.display().to_string()).collect();
        std::fs::write(&list, text.join("\n")).unwrap();
        let feats = dir.0.join("feats").display().to_string();
        run_ok(&[
            "extract",
            "-q",
            "--device",
            "cpu",
            "--weights",
            &weights(),
            "--size",
            SIZE,
            "-o",
            &feats,
            list.to_str().unwrap(),
        ]);
        run_ok(&["index", &feats, "-o", dir.0.join("index").to_str().unwrap()]);
        Fixture { dir }
    })
}

/// A running `crosspool serve`, stopped when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Server {
    let f = fixture();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crosspool"))
        .args(["serve", "--port", "0", "--index"])
        .arg(f.index())
        .arg("--images")
        .arg(f.root())
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("serve stopped before listening"))
            .unwrap();
        if let Some(at) = line.find("open http://") {
            let addr = line[at + "open ".len()..]
                .split_whitespace()
                .next()
                .unwrap();
            break addr.trim_end_matches('/').to_string();
        }
    };
    // The rest of its messages, read so the pipe never fills.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, base }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `(status, JSON body)` of a POST of `body` with `content_type`.
fn post(server: &Server, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let mut r = agent()
        .post(format!("{}/api/search", server.base))
        .header("Content-Type", content_type)
        .send(&body[..])
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, v)
}

/// A multipart form of `fields`: `(name, file name, bytes)`.
fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "crosspool-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, file, bytes) in fields {
        body.extend(format!("--{boundary}\r\n").bytes());
        match file {
            Some(f) => body.extend(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").bytes(),
            ),
            None => body.extend(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(server: &Server, name: &str, bytes: &[u8], extra: &[(&str, &str)]) -> (u16, Value) {
    let mut fields: Vec<(&str, Option<&str>, &[u8])> = vec![("image", Some(name), bytes)];
    fields.extend(extra.iter().map(|(k, v)| (*k, None, v.as_bytes())));
    let (kind, body) = multipart(&fields);
    post(server, &kind, body)
}

fn query_bytes(name: &str) -> Vec<u8> {
    std::fs::read(repo("tests/data/retrieval").join(name)).unwrap()
}

/// `crosspool search --json`'s `(path, score)` list for a query image.
fn cli_search(query: &str, device: &str, extra: &[&str]) -> Vec<(String, f64)> {
    let f = fixture();
    let q = repo("tests/data/retrieval").join(query);
    let index = f.index();
    let mut args = vec![
        "search",
        "--json",
        "--device",
        device,
        "--index",
        index.to_str().unwrap(),
        "--query",
        q.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run_ok(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    hits(&v)
}

fn hits(v: &Value) -> Vec<(String, f64)> {
    v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {v}"))
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_upload_and_a_path_are_answered_as_search_answers() {
    for device in ["cpu", "gpu"] {
        let server = serve(&["--device", device]);
        let want = cli_search("astronaut.jpg", device, &["--top", "5"]);
        assert!(want[0].0.contains("astronaut_"), "{want:?}");
        let (status, v) = upload(
            &server,
            "astronaut.jpg",
            &query_bytes("astronaut.jpg"),
            &[("top", "5")],
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(hits(&v), want, "{device}");
        assert_eq!(v["query"], "astronaut.jpg");
        assert_eq!(v["channels"], 50);
        for (r, h) in v["results"].as_array().unwrap().iter().enumerate() {
            assert_eq!(h["rank"], r + 1);
            let name = Path::new(h["path"].as_str().unwrap()).file_name().unwrap();
            assert_eq!(h["thumbnail"], format!("/thumb/{}", name.to_str().unwrap()));
        }

        // A path under the root, all channels compared.
        let want = cli_search("astronaut.jpg", device, &["--top", "3", "-k", "all"]);
        std::fs::copy(
            repo("tests/data/retrieval/astronaut.jpg"),
            fixture().root().join("sub/query.jpg"),
        )
        .unwrap();
        let body = br#"{"path": "sub/query.jpg", "top": 3, "k": "all"}"#.to_vec();
        let (status, v) = post(&server, "application/json", body);
        assert_eq!(status, 200, "{v}");
        assert_eq!(hits(&v), want, "{device}");
        assert_eq!(v["channels"], 512);
        assert_eq!(
            v["query"], "sub/query.jpg",
            "named as asked, not by its place on the server"
        );
    }
}

#[test]
fn concurrent_requests_each_get_their_own_answer() {
    // Batches of up to 3: requests that wait together are extracted together.
    let server = serve(&["--device", "cpu", "--batch", "3"]);
    let want: Vec<Vec<(String, f64)>> = QUERIES.iter().map(|q| cli_search(q, "cpu", &[])).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (server, want) = (&server, &want);
                s.spawn(move || {
                    let q = i % QUERIES.len();
                    let (status, v) = upload(server, QUERIES[q], &query_bytes(QUERIES[q]), &[]);
                    assert_eq!(status, 200, "{v}");
                    assert_eq!(hits(&v), want[q], "request {i} ({})", QUERIES[q]);
                    assert_eq!(v["query"], QUERIES[q]);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn bad_uploads_are_refused_with_reasons_and_the_server_goes_on() {
    let server = serve(&["--device", "cpu", "--max-upload-mib", "1"]);
    let cases: Vec<(&str, (u16, Value), &str)> = vec![
        ("empty", upload(&server, "e.jpg", b"", &[]), "empty"),
        (
            "not an image",
            upload(&server, "x.jpg", b"\xff\xd8\xff not a jpeg", &[]),
            "",
        ),
        (
            "top 0",
            upload(
                &server,
                "a.jpg",
                &query_bytes("camera.jpg"),
                &[("top", "0")],
            ),
            "top must be",
        ),
        (
            "top text",
            upload(
                &server,
                "a.jpg",
                &query_bytes("camera.jpg"),
                &[("top", "ten")],
            ),
            "top must be",
        ),
        (
            "k 0",
            upload(&server, "a.jpg", &query_bytes("camera.jpg"), &[("k", "0")]),
            "k must be",
        ),
        (
            "unknown field",
            upload(
                &server,
                "a.jpg",
                &query_bytes("camera.jpg"),
                &[("colour", "red")],
            ),
            "unknown form field",
        ),
        (
            "no image",
            post(
                &server,
                &multipart(&[("top", None, b"3")]).0,
                multipart(&[("top", None, b"3")]).1,
            ),
            "no query",
        ),
        (
            "both",
            {
                let (k, b) = multipart(&[
                    ("image", Some("a.jpg"), &query_bytes("camera.jpg")),
                    ("path", None, b"brick.jpg"),
                ]);
                post(&server, &k, b)
            },
            "not both",
        ),
        (
            "text/plain",
            post(&server, "text/plain", b"astronaut.jpg".to_vec()),
            "multipart",
        ),
        (
            "bad JSON",
            post(&server, "application/json", b"{\"path\": 3}".to_vec()),
            "",
        ),
    ];
    for (what, (status, v), says) in &cases {
        assert!((400..500).contains(status), "{what}: {status} {v}");
        let error = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error in {v}"));
        assert!(error.contains(says), "{what}: {error}");
    }
    // The undecodable image is named, with the decoder's reason.
    assert_eq!(cases[1].1 .0, 422);
    assert_eq!(cases[1].1 .1["query"], "x.jpg");
    // Over --max-upload-mib: refused from its length, before the body is sent (a client that
    // sends it anyway finds the connection closed).
    {
        use std::io::{Read, Write};
        let addr = server.base.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let (kind, _) = multipart(&[]);
        write!(
            tcp,
            "POST /api/search HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
            2 << 20
        )
        .unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
    }
    // And a good query is still answered.
    let (status, v) = upload(&server, "camera.jpg", &query_bytes("camera.jpg"), &[]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(hits(&v), cli_search("camera.jpg", "cpu", &[]));
}

#[test]
fn nothing_outside_the_image_root_is_read() {
    let server = serve(&["--device", "cpu"]);
    let get = |path: &str| -> (u16, Vec<u8>) {
        let mut r = agent()
            .get(format!("{}{path}", server.base))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_vec().unwrap())
    };
    let (status, jpeg) = get("/thumb/brick.jpg");
    assert_eq!(status, 200);
    let thumb = image::load_from_memory(&jpeg).unwrap();
    assert_eq!(thumb.width().max(thumb.height()), 320);
    assert_eq!(get("/thumb/sub/brick%20copy.jpg").0, 200);
    for bad in [
        "/thumb/..%2Fsecret.txt",
        "/thumb/sub/..%2F..%2Fsecret.txt",
        "/thumb/%2Fetc%2Fpasswd",
        "/thumb//etc/passwd",
        "/thumb/escape.jpg",
    ] {
        let (status, body) = get(bad);
        assert_eq!(status, 403, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(get("/thumb/missing.jpg").0, 404);
    assert_eq!(get("/thumb/sub").0, 404);
    let f = fixture();
    for path in [
        "../secret.txt".to_string(),
        f.dir.0.join("outside.jpg").display().to_string(),
        "escape.jpg".to_string(),
    ] {
        let body = serde_json::to_vec(&serde_json::json!({ "path": path })).unwrap();
        let (status, v) = post(&server, "application/json", body);
        assert_eq!(status, 403, "{path}: {v}");
    }
    // It listens on this machine only, unless told otherwise.
    assert!(
        server.base.starts_with("http://127.0.0.1:"),
        "{}",
        server.base
    );
    // The page and the index's description.
    let (status, page) = get("/");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("/api/search"));
    let (status, info) = get("/api/info");
    assert_eq!(status, 200);
    let info: Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(info["images"], 34);
    assert_eq!(info["network"], "vgg16");
}

#[test]
fn requests_over_the_queue_are_answered_busy_until_a_slot_frees() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let server = serve(&["--device", "cpu", "--queue", "1"]);
    // A client that sends half its upload holds the one slot while its body is read...
    let addr = server.base.trim_start_matches("http://").to_string();
    let (kind, _) = multipart(&[]);
    let hold_the_slot = || {
        let mut slow = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            slow,
            "POST /api/search HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {kind}\r\nContent-Length: 100000\r\n\r\n--crosspool"
        )
        .unwrap();
        slow.flush().unwrap();
        slow
    };
    let mut slow = Some(hold_the_slot());
    let until = |want: u16, what: &str, slow: &mut Option<std::net::TcpStream>| {
        let start = Instant::now();
        loop {
            let (status, v) = upload(&server, "camera.jpg", &query_bytes("camera.jpg"), &[]);
            if status == want {
                return v;
            }
            // Under load one of these uploads can reach the server before the slow client's
            // headers, which are then answered busy: hold the slot again with a new one.
            if slow.as_mut().is_some_and(refused) {
                *slow = Some(hold_the_slot());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: still {status} {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // ...so another is answered busy, with the reason...
    let v = until(503, "with the slot held", &mut slow);
    assert!(v["error"].as_str().unwrap().contains("busy"), "{v}");
    // ...and once that client goes away, queries are answered again.
    slow = None;
    let v = until(200, "after the slot was freed", &mut slow);
    assert_eq!(hits(&v), cli_search("camera.jpg", "cpu", &[]));
}

/// Whether the server has answered (refused) the half-sent request on `slow`: a response
/// is there to read, where a request that holds its slot gets none until its body ends.
fn refused(slow: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    slow.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let answered =
        !matches!(slow.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    slow.set_nonblocking(false).unwrap();
    answered
}
