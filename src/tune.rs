//! Choosing among kernel variants by timing, as cuDNN's benchmark mode does, for any kernel:
//! a key (the device and the problem, in words) maps to the name of the fastest variant,
//! timed once on first use and kept, in memory for the process and in a JSON file for later
//! runs. The tuner knows no particular kernel: callers name the variants and say which names
//! they still accept (a cache written by another version may name one that is gone).

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

crate::choice! {
    /// Whether kernel variants are chosen by timing (`--autotune`, `CROSSPOOL_AUTOTUNE`).
    pub enum Autotune: default Auto {
        /// On hardware GPUs; off on software adapters (lavapipe: their "GPU" is the CPU's cores,
        /// where the size rules were measured, and timing every layer takes seconds).
        Auto = "auto",
        /// Time the candidates of every new problem, also on software adapters.
        On = "on",
        /// Never time: each kernel follows its size rule (docs/design.md).
        Off = "off",
    }
}

/// The cache file where none is named: `conv-tiles.json` (its name from when convolutions
/// were the one tuned kernel) in crosspool's folder of the user's cache directory
/// (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS, `%LOCALAPPDATA%`
/// on Windows), if the platform has one.
pub fn default_cache_path() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("crosspool").join("conv-tiles.json"))
}

/// The cache file's format version. Its map of choices is named `tiles`, from when
/// convolution tiles were the one tuned kernel: the format is unchanged, so files written
/// before read as they are.
const CACHE_VERSION: u64 = 1;

/// Variants chosen so far, by key.
struct Chosen {
    /// The cache files' entries as read, plus this process's choices.
    variants: BTreeMap<String, String>,
    /// Files read already, so that each is read (and a corrupt one warned about) once.
    loaded: Vec<PathBuf>,
}

/// The choices of every caller in the process: one lock, so that a problem is timed once
/// even when several threads meet it at the same time.
fn chosen() -> &'static Mutex<Chosen> {
    static CHOSEN: OnceLock<Mutex<Chosen>> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        Mutex::new(Chosen {
            variants: BTreeMap::new(),
            loaded: Vec::new(),
        })
    })
}

/// The variant for `key`: the one chosen before (in this process or in `cache`) if `valid`
/// still accepts its name, else the fastest of `time`'s measurements (each candidate's name
/// and seconds), which is then kept and written to `cache`.
pub fn choose(
    cache: Option<&Path>,
    key: &str,
    valid: impl Fn(&str) -> bool,
    time: impl FnOnce() -> Result<Vec<(String, f64)>>,
) -> Result<String> {
    let mut c = chosen().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache {
        if !c.loaded.iter().any(|l| l == p) {
            let read = read_cache(p);
            c.loaded.push(p.to_path_buf());
            for (k, v) in read {
                c.variants.entry(k).or_insert(v);
            }
        }
    }
    if let Some(name) = c.variants.get(key).filter(|n| valid(n)) {
        return Ok(name.clone());
    }
    let timed = time()?;
    let best = timed
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| name.clone())
        .ok_or_else(|| Error::Config("autotuning: no candidate to time".into()))?;
    c.variants.insert(key.to_string(), best.clone());
    if let Some(p) = cache {
        if let Err(e) = write_cache(p, &c.variants) {
            warn(&format!(
                "could not save the tuned choices to {}: {e} (they are kept for this run)",
                p.display()
            ));
        }
    }
    Ok(best)
}

/// The timing harness: each candidate runs once to warm up (compiling, allocating), then
/// twice in batches of enough repetitions to last some `target` seconds (at most 64); the
/// faster batch's time per repetition counts. `run(candidate, reps)` must do `reps`
/// repetitions and wait for them.
pub fn time_candidates<T>(
    candidates: Vec<T>,
    target: f64,
    mut run: impl FnMut(&T, usize) -> Result<()>,
) -> Result<Vec<(T, f64)>> {
    let mut timed = |c: &T, reps: usize| -> Result<f64> {
        let t0 = Instant::now();
        run(c, reps)?;
        Ok(t0.elapsed().as_secs_f64() / reps as f64)
    };
    candidates
        .into_iter()
        .map(|c| {
            let once = timed(&c, 1)?;
            let reps = ((target / once.max(1e-6)).ceil() as usize).clamp(1, 64);
            let best = timed(&c, reps)?.min(timed(&c, reps)?);
            Ok((c, best))
        })
        .collect()
}

/// Warns once per message and process: the cache is read and written once per layer
/// shape, and one unwritable file said the same thing nine times.
fn warn(message: &str) {
    if first_time(message) {
        eprintln!("crosspool: warning: autotune: {message}");
    }
}

/// Whether this process has not said `message` before (and now has).
fn first_time(message: &str) -> bool {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    let new = !said.iter().any(|m| m == message);
    if new {
        said.push(message.to_string());
    }
    new
}

/// The entries of the cache file at `path`: none if it does not exist; none, with a
/// warning, if it cannot be read or is not a cache this crosspool wrote (it is then
/// replaced when the next choice is saved).
fn read_cache(path: &Path) -> BTreeMap<String, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            warn(&format!("ignoring {}: {e}", path.display()));
            return BTreeMap::new();
        }
    };
    match parse_cache(&text) {
        Ok(v) => v,
        Err(why) => {
            warn(&format!(
                "ignoring {}: {why}; the kernels will be timed again",
                path.display()
            ));
            BTreeMap::new()
        }
    }
}

fn parse_cache(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    if v["version"].as_u64() != Some(CACHE_VERSION) {
        return Err(format!("not a version {CACHE_VERSION} tuning cache"));
    }
    let entries = v["tiles"]
        .as_object()
        .ok_or_else(|| "no map of choices".to_string())?;
    entries
        .iter()
        .map(|(k, v)| {
            let name = v
                .as_str()
                .ok_or_else(|| format!("{k}: {v} is not a name"))?;
            Ok((k.clone(), name.to_string()))
        })
        .collect()
}

/// Writes `variants` to `path` whole, under a temporary name renamed into place, so that a
/// reader never sees half a file and concurrent runs leave one of their versions.
fn write_cache(path: &Path, variants: &BTreeMap<String, String>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({ "version": CACHE_VERSION, "tiles": variants });
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(&json).expect("JSON"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_warning_is_said_once() {
        let m = "cannot write /nowhere/cache.json (test)";
        assert!(first_time(m));
        assert!(!first_time(m));
        assert!(first_time("another warning (test)"));
    }

    use super::*;

    #[test]
    fn cache_files_round_trip_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("crosspool-tune-{}", std::process::id()));
        let path = dir.join("sub").join("choices.json");
        let v = BTreeMap::from([
            ("a".to_string(), "small".to_string()),
            ("b".to_string(), "split4".to_string()),
        ]);
        write_cache(&path, &v).unwrap();
        assert_eq!(read_cache(&path), v);
        let written = r#"{"version": 1, "tiles": {"a": "small", "b": "split4"}}"#;
        assert_eq!(parse_cache(written).unwrap(), v);
        for bad in [
            "{",
            "[]",
            r#"{"version": 2, "tiles": {}}"#,
            r#"{"version": 1}"#,
            r#"{"version": 1, "tiles": {"a": 3}}"#,
        ] {
            assert!(parse_cache(bad).is_err(), "{bad}");
        }
        std::fs::write(&path, "not json").unwrap();
        assert!(read_cache(&path).is_empty());
        assert!(read_cache(&dir.join("missing.json")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fastest_is_kept_and_a_name_no_longer_valid_is_timed_again() {
        let key = format!("tune-test-{}", std::process::id());
        let pick = |valid: &dyn Fn(&str) -> bool, timings: Vec<(&str, f64)>| {
            choose(None, &key, valid, || {
                Ok(timings.iter().map(|(n, s)| (n.to_string(), *s)).collect())
            })
            .unwrap()
        };
        assert_eq!(pick(&|_| true, vec![("x", 2.0), ("y", 1.0)]), "y");
        // Kept: not timed again (these timings would pick x).
        assert_eq!(pick(&|_| true, vec![("x", 0.5), ("y", 1.0)]), "y");
        // The caller no longer accepts y: timed again.
        assert_eq!(pick(&|n| n != "y", vec![("x", 0.5)]), "x");
        // No candidate is an error, not a silent default.
        let none = format!("{key}-none");
        assert!(choose(None, &none, |_| true, || Ok(vec![])).is_err());
        // The harness times every candidate, warm-up first.
        let mut calls = Vec::new();
        let t = time_candidates(vec![1, 2], 0.0, |c, reps| {
            calls.push((*c, reps));
            Ok(())
        })
        .unwrap();
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(calls.len(), 6);
    }
}
