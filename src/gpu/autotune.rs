//! Choosing each convolution's tile by timing, as cuDNN's benchmark mode does: the candidate
//! tiles of a (device, layer shape, batch, storage types) are timed once, on first use, and
//! the fastest is kept, in memory for the process and in a JSON cache file for later runs.

use super::conv::ConvTile;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Whether convolution tiles are chosen by timing (`--autotune`, `CROSSPOOL_AUTOTUNE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Autotune {
    /// On hardware GPUs; off on software adapters (lavapipe: their "GPU" is the CPU's cores,
    /// where the rule the tiles follow was measured, and timing every layer takes seconds).
    #[default]
    Auto,
    /// Time the candidates of every new layer shape, also on software adapters.
    On,
    /// Never time: each layer's tile follows the size rule (README, design notes).
    Off,
}

/// The cache file's format version.
const CACHE_VERSION: u64 = 1;

/// The cache file where none is named: `conv-tiles.json` in crosspool's folder of the user's
/// cache directory (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS,
/// `%LOCALAPPDATA%` on Windows), if the platform has one.
pub fn default_cache_path() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("crosspool").join("conv-tiles.json"))
}

/// Tiles chosen so far, by key.
struct Tuned {
    /// The cache files' entries as read, plus this process's choices.
    tiles: BTreeMap<String, ConvTile>,
    /// Files read already, so that each is read (and a corrupt one warned about) once.
    loaded: Vec<PathBuf>,
}

/// The choices of every context in the process: one lock, so that a layer shape is timed
/// once even when several runners meet it at the same time.
fn tuned() -> &'static Mutex<Tuned> {
    static TUNED: OnceLock<Mutex<Tuned>> = OnceLock::new();
    TUNED.get_or_init(|| {
        Mutex::new(Tuned {
            tiles: BTreeMap::new(),
            loaded: Vec::new(),
        })
    })
}

/// The tile for `key`: the one chosen before (in this process or in `cache`), else the
/// fastest of `time`'s measurements, which is then kept. `time` returns each candidate with
/// its seconds.
pub fn choose(
    cache: Option<&Path>,
    key: &str,
    time: impl FnOnce() -> Result<Vec<(ConvTile, f64)>>,
) -> Result<ConvTile> {
    let mut t = tuned().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache {
        if !t.loaded.iter().any(|l| l == p) {
            let read = read_cache(p);
            t.loaded.push(p.to_path_buf());
            for (k, v) in read {
                t.tiles.entry(k).or_insert(v);
            }
        }
    }
    if let Some(tile) = t.tiles.get(key) {
        return Ok(*tile);
    }
    let timed = time()?;
    let best = timed
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(tile, _)| *tile)
        .ok_or_else(|| Error::Config("autotuning: no candidate tile to time".into()))?;
    t.tiles.insert(key.to_string(), best);
    if let Some(p) = cache {
        if let Err(e) = write_cache(p, &t.tiles) {
            warn(&format!(
                "could not save the tuned tiles to {}: {e} (they are kept for this run)",
                p.display()
            ));
        }
    }
    Ok(best)
}

fn warn(message: &str) {
    eprintln!("crosspool: warning: autotune: {message}");
}

/// The entries of the cache file at `path`: none if it does not exist; none, with a
/// warning, if it cannot be read or is not a cache this crosspool wrote (it is then
/// replaced when the next choice is saved).
fn read_cache(path: &Path) -> BTreeMap<String, ConvTile> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            warn(&format!("ignoring {}: {e}", path.display()));
            return BTreeMap::new();
        }
    };
    match parse_cache(&text) {
        Ok(tiles) => tiles,
        Err(why) => {
            warn(&format!(
                "ignoring {}: {why}; the layers will be timed again",
                path.display()
            ));
            BTreeMap::new()
        }
    }
}

fn parse_cache(text: &str) -> std::result::Result<BTreeMap<String, ConvTile>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    if v["version"].as_u64() != Some(CACHE_VERSION) {
        return Err(format!("not a version {CACHE_VERSION} tile cache"));
    }
    let entries = v["tiles"]
        .as_object()
        .ok_or_else(|| "no \"tiles\" object".to_string())?;
    entries
        .iter()
        .map(|(k, v)| {
            let tile = v
                .as_str()
                .and_then(ConvTile::from_name)
                .ok_or_else(|| format!("{k}: {v} is not a tile"))?;
            Ok((k.clone(), tile))
        })
        .collect()
}

/// Writes `tiles` to `path` whole, under a temporary name renamed into place, so that a
/// reader never sees half a file and concurrent runs leave one of their versions.
fn write_cache(path: &Path, tiles: &BTreeMap<String, ConvTile>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "version": CACHE_VERSION,
        "tiles": tiles.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.name()))).collect::<serde_json::Map<_, _>>(),
    });
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(&json).expect("JSON"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_files_round_trip_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("crosspool-autotune-{}", std::process::id()));
        let path = dir.join("sub").join("tiles.json");
        let tiles = BTreeMap::from([
            ("a".to_string(), ConvTile::Small),
            ("b".to_string(), ConvTile::Large),
            ("c".to_string(), ConvTile::Coop),
        ]);
        write_cache(&path, &tiles).unwrap();
        assert_eq!(read_cache(&path), tiles);
        for bad in [
            "{",
            "[]",
            r#"{"version": 2, "tiles": {}}"#,
            r#"{"version": 1}"#,
            r#"{"version": 1, "tiles": {"a": "huge"}}"#,
        ] {
            assert!(parse_cache(bad).is_err(), "{bad}");
        }
        std::fs::write(&path, "not json").unwrap();
        assert!(read_cache(&path).is_empty());
        assert!(read_cache(&dir.join("missing.json")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
