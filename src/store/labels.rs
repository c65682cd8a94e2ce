//! Class labels of images, recorded in the shard manifests by `extract --labels`: from a CSV
//! (`path,label`) or JSON-lines (`{"path": ..., "label": ...}`) file, from each image's
//! parent folder name (the ImageFolder convention: `train/cat/1.jpg` is a `cat`), or for the
//! images of WebDataset tars from a sidecar of their sample (`.cls`, or a key of `.json`).

use crate::error::{Error, Result};
use crate::input::image_identity;
use crate::input::ImageSource;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where labels come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelSource {
    /// The name of each image's parent folder.
    Folder,
    /// A CSV or JSON-lines file; relative paths in it are relative to its own folder.
    File(PathBuf),
    /// A tar sample's sidecar `field` (`cls`: the text of `KEY.cls`), or with `key` that key
    /// of the JSON sidecar `field` (`json`, `label`).
    Sidecar {
        /// The sidecar's field (its extension).
        field: String,
        /// A key of its JSON object.
        key: Option<String>,
    },
}

impl LabelSource {
    /// `folder`, `sidecar:FIELD`, `sidecar:FIELD:KEY`, or a file's path, as `--labels` takes
    /// it.
    pub fn parse(s: &str) -> Self {
        if s == "folder" {
            return LabelSource::Folder;
        }
        if let Some(rest) = s.strip_prefix("sidecar:") {
            let (field, key) = match rest.split_once(':') {
                Some((f, k)) => (f, Some(k.to_string())),
                None => (rest, None),
            };
            return LabelSource::Sidecar {
                field: field.to_string(),
                key,
            };
        }
        LabelSource::File(PathBuf::from(s))
    }

    /// Where the labels come from, in words.
    fn describe(&self) -> String {
        match self {
            LabelSource::Folder => "a parent folder".to_string(),
            LabelSource::File(f) => f.display().to_string(),
            LabelSource::Sidecar { field, key: None } => format!("the sidecar .{field}"),
            LabelSource::Sidecar {
                field,
                key: Some(k),
            } => format!("key {k} of the sidecar .{field}"),
        }
    }
}

/// Labels, ready to look up by image.
pub struct Labels {
    source: LabelSource,
    /// By [`image_identity`] (file sources only).
    by_image: HashMap<PathBuf, String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLabel {
    path: String,
    label: String,
}

/// `(line index, path, label)` of each line of a JSON-lines labels file.
fn json_lines(
    text: &str,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<Vec<(usize, String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let l: JsonLabel = serde_json::from_str(line)
            .map_err(|e| at(n, format!("not {{\"path\": ..., \"label\": ...}} ({e})")))?;
        out.push((n, l.path, l.label));
    }
    Ok(out)
}

/// `(line index, path, label)` of each record of a `path,label` CSV file, read by the csv
/// crate (quoted fields, `""` escapes); `#` lines are comments and a first record
/// `path,label` is a header. An unquoted path with commas still reads: every field but the
/// last is the path.
fn csv_rows(
    text: &str,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<Vec<(usize, String, String)>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    for (k, record) in reader.records().enumerate() {
        let line = |r: &csv::StringRecord| r.position().map_or(0, |p| p.line() as usize - 1);
        let record = record.map_err(|e| {
            let n = e.position().map_or(0, |p| p.line() as usize - 1);
            at(n, format!("not CSV ({e})"))
        })?;
        let n = line(&record);
        let fields: Vec<&str> = record.iter().collect();
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        if k == 0 && fields == ["path", "label"] {
            continue;
        }
        let Some((label, path)) = fields.split_last().filter(|(_, p)| !p.is_empty()) else {
            return Err(at(n, "not of the form path,label".into()));
        };
        out.push((n, path.join(","), label.to_string()));
    }
    Ok(out)
}

impl Labels {
    /// Reads the labels of `source`. A file naming an image that does not exist, an image
    /// twice with two labels, or an empty label is an error that names the line.
    pub fn load(source: LabelSource) -> Result<Self> {
        let mut by_image = HashMap::new();
        if let LabelSource::File(file) = &source {
            let text = std::fs::read_to_string(file).map_err(Error::io(file))?;
            // Spreadsheet programs start UTF-8 files with a byte-order mark.
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let base = file.parent().unwrap_or(Path::new("."));
            let json = matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("jsonl" | "json")
            );
            let at = |n: usize, why: String| {
                Error::Config(format!("{}:{}: {why}", file.display(), n + 1))
            };
            let entries = if json {
                json_lines(text, &at)?
            } else {
                csv_rows(text, &at)?
            };
            for (n, path, label) in entries {
                if label.is_empty() {
                    return Err(at(n, format!("{path} has an empty label")));
                }
                let image = base.join(&path);
                if !image.is_file() {
                    return Err(at(
                        n,
                        format!(
                            "labels {path}, which is not an image file here ({})",
                            image.display()
                        ),
                    ));
                }
                let id = image_identity(&image);
                if let Some(was) = by_image.insert(id, label.clone()) {
                    if was != label {
                        return Err(at(
                            n,
                            format!("labels {path} '{label}', and an earlier line '{was}'"),
                        ));
                    }
                }
            }
            if by_image.is_empty() {
                return Err(Error::Config(format!("{} labels no image", file.display())));
            }
        }
        Ok(Labels { source, by_image })
    }

    /// The label of the image file `image`, if it has one.
    pub fn label_of(&self, image: &Path) -> Option<String> {
        match &self.source {
            LabelSource::Folder => image
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.is_empty()),
            LabelSource::File(_) => self.by_image.get(&image_identity(image)).cloned(),
            LabelSource::Sidecar { .. } => None,
        }
    }

    /// The label of `source`: a file's as [`Labels::label_of`] gives it, a tar member's from
    /// its sample's sidecar (text, or a JSON string or number; blank is none).
    pub fn label_of_source(&self, source: &ImageSource) -> Option<String> {
        let (LabelSource::Sidecar { field, key }, ImageSource::Member(m)) = (&self.source, source)
        else {
            return source.file().and_then(|p| self.label_of(p));
        };
        let mut v = m.sidecars.get(field)?;
        if let Some(k) = key {
            v = v.get(k)?;
        }
        let text = match v {
            serde_json::Value::String(s) => s.trim().to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        (!text.is_empty()).then_some(text)
    }

    /// Fails, naming a few, if any of `images` has no label. Parts of tars that hold no
    /// readable member need none: they are recorded as failed.
    pub fn check_all_sources_labelled<'s>(
        &self,
        images: impl IntoIterator<Item = &'s ImageSource>,
    ) -> Result<()> {
        let (mut missing, mut total) = (Vec::new(), 0);
        for s in images {
            total += 1;
            let unreadable = matches!(s, ImageSource::Member(m) if m.problem.is_some());
            if !unreadable && self.label_of_source(s).is_none() {
                // A sidecar that was there but not read (too large, not text) says why.
                let why = match (&self.source, s) {
                    (LabelSource::Sidecar { field, .. }, ImageSource::Member(m)) => m
                        .sidecars
                        .get(field)
                        .and_then(|v| v.get("not_carried"))
                        .and_then(|r| r.as_str())
                        .map(|r| format!(" (its .{field} is not read: {r})")),
                    _ => None,
                };
                missing.push(format!("{}{}", s.name().display(), why.unwrap_or_default()));
            }
        }
        self.missing_error(&missing, total)
    }

    fn missing_error(&self, missing: &[String], of: usize) -> Result<()> {
        if missing.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        Err(Error::Config(format!(
            "{} of {of} images have no label in {}, e.g. {}",
            missing.len(),
            self.source.describe(),
            shown.join(", ")
        )))
    }

    /// Fails, naming a few, if any of the image files `images` has no label.
    pub fn check_all_labelled(&self, images: &[PathBuf]) -> Result<()> {
        let missing: Vec<String> = images
            .iter()
            .filter(|p| self.label_of(p).is_none())
            .map(|p| p.display().to_string())
            .collect();
        self.missing_error(&missing, images.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sources_parse_as_the_flag_takes_them() {
        assert_eq!(LabelSource::parse("folder"), LabelSource::Folder);
        assert_eq!(
            LabelSource::parse("sidecar:cls"),
            LabelSource::Sidecar {
                field: "cls".into(),
                key: None
            }
        );
        assert_eq!(
            LabelSource::parse("sidecar:json:label"),
            LabelSource::Sidecar {
                field: "json".into(),
                key: Some("label".into())
            }
        );
        assert_eq!(
            LabelSource::parse("labels.csv"),
            LabelSource::File("labels.csv".into())
        );
    }

    /// A scratch folder with `cat/1.jpg`, `cat/2.jpg`, `dog/3.jpg` (empty files: labels only
    /// look at names).
    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("crosspool-labels-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for f in ["cat/1.jpg", "cat/2.jpg", "dog/3.jpg"] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), b"").unwrap();
        }
        d
    }

    fn load(dir: &Path, file: &str, text: &str) -> Result<Labels> {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        Labels::load(LabelSource::File(path))
    }

    #[test]
    fn folder_csv_and_json_lines_agree() {
        let d = scratch("agree");
        let images: Vec<PathBuf> = ["cat/1.jpg", "cat/2.jpg", "dog/3.jpg"]
            .iter()
            .map(|f| d.join(f))
            .collect();
        let folder = Labels::load(LabelSource::parse("folder")).unwrap();
        let csv = load(
            &d,
            "l.csv",
            "path,label\ncat/1.jpg,cat\n# a comment\ncat/2.jpg , cat\n\ndog/3.jpg,dog\n",
        )
        .unwrap();
        let absolute = d.join("dog/3.jpg").display().to_string();
        let jsonl = load(
            &d,
            "l.jsonl",
            &format!(
                "{{\"path\":\"cat/1.jpg\",\"label\":\"cat\"}}\n{{\"path\":\"./cat/2.jpg\",\"label\":\"cat\"}}\n{{\"path\":{absolute:?},\"label\":\"dog\"}}\n"
            ),
        )
        .unwrap();
        for labels in [&folder, &csv, &jsonl] {
            labels.check_all_labelled(&images).unwrap();
            let got: Vec<String> = images.iter().map(|p| labels.label_of(p).unwrap()).collect();
            assert_eq!(got, ["cat", "cat", "dog"]);
        }
        // The same image spelt another way has the same label.
        let other = d.join("cat/../dog/3.jpg");
        assert_eq!(csv.label_of(&other).as_deref(), Some("dog"));
    }

    #[test]
    fn csv_quoting_and_a_byte_order_mark_are_read() {
        let d = scratch("quoting");
        std::fs::create_dir_all(d.join("a,b")).unwrap();
        std::fs::write(d.join("a,b/1.jpg"), b"x").unwrap();
        let labels = load(
            &d,
            "l.csv",
            "\u{feff}path,label\ncat/1.jpg,\"person\"\n\"a,b/1.jpg\",cat\n\"cat/2.jpg\",\"say \"\"hi\"\"\"\n",
        )
        .unwrap();
        assert_eq!(
            labels.label_of(&d.join("cat/1.jpg")).as_deref(),
            Some("person")
        );
        assert_eq!(
            labels.label_of(&d.join("a,b/1.jpg")).as_deref(),
            Some("cat")
        );
        assert_eq!(
            labels.label_of(&d.join("cat/2.jpg")).as_deref(),
            Some("say \"hi\"")
        );
        let jsonl = load(
            &d,
            "l.jsonl",
            "\u{feff}{\"path\":\"cat/1.jpg\",\"label\":\"cat\"}\n",
        )
        .unwrap();
        assert_eq!(jsonl.label_of(&d.join("cat/1.jpg")).as_deref(), Some("cat"));
    }

    #[test]
    fn bad_label_files_name_the_line() {
        let d = scratch("bad");
        let cases = [
            (
                "cat/1.jpg,cat\ncat/9.jpg,cat\n",
                "l.csv:2",
                "not an image file",
            ),
            (
                "cat/1.jpg,cat\ncat/1.jpg,dog\n",
                "l.csv:2",
                "earlier line 'cat'",
            ),
            ("cat/1.jpg,\n", "l.csv:1", "empty label"),
            ("cat/1.jpg\n", "l.csv:1", "path,label"),
            ("# nothing\n", "l.csv", "labels no image"),
        ];
        for (text, place, why) in cases {
            let e = load(&d, "l.csv", text).err().expect(text).to_string();
            assert!(e.contains(place) && e.contains(why), "{text:?}: {e}");
        }
        let e = load(&d, "l.jsonl", "{\"path\":\"cat/1.jpg\"}\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("l.jsonl:1"), "{e}");
        // An image the file does not name is reported before any work is done.
        let labels = load(&d, "l.csv", "cat/1.jpg,cat\n").unwrap();
        let e = labels
            .check_all_labelled(&[d.join("cat/1.jpg"), d.join("dog/3.jpg")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1 of 2 images have no label") && e.contains("3.jpg"),
            "{e}"
        );
    }
}
