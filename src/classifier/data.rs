//! Labelled features from an extraction's output directory: every image recorded `ok` in the
//! manifests, with its stored feature as one vector and the label `extract --labels` wrote.

use crate::error::{Error, Result};
use crate::store::shards::{finished_shards, read_manifest, tensor_floats};
use crate::store::ExtractSettings;
use safetensors::SafeTensors;
use std::path::Path;

/// The features of one extraction, one vector per image.
pub struct FeatureSet {
    /// The settings the features were extracted with.
    pub settings: ExtractSettings,
    /// `images * d` values.
    pub x: Vec<f32>,
    /// Vector length (`feature_rows * feature_cols`).
    pub d: usize,
    /// Each image's path, as its manifest line holds it.
    pub paths: Vec<String>,
    /// Each image's label, if the run recorded one.
    pub labels: Vec<Option<String>>,
    /// Images recorded as failed in the manifests (they have no feature): path and reason.
    pub failed: Vec<(String, String)>,
}

impl FeatureSet {
    /// Images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// No images.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Image `i`'s vector.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    /// The labels, or an error naming the first image without one.
    pub fn require_labels(&self) -> Result<Vec<&str>> {
        self.labels
            .iter()
            .zip(&self.paths)
            .map(|(l, p)| {
                l.as_deref().ok_or_else(|| {
                    Error::Config(format!(
                        "{p} has no label in its manifest: extract with --labels (folder, or a CSV / JSON-lines file)"
                    ))
                })
            })
            .collect()
    }

    /// Reads every finished shard of `dir` (all parts). Features stored as sign codes, a
    /// non-finite value, or shards of different settings are errors.
    pub fn read(dir: &Path) -> Result<Self> {
        let shards = finished_shards(dir, None)?;
        if shards.is_empty() {
            return Err(Error::Config(format!(
                "{} holds no finished feature shards (run crosspool extract --out {} first)",
                dir.display(),
                dir.display()
            )));
        }
        let mut set: Option<FeatureSet> = None;
        for shard in shards {
            let path = &shard.data;
            let bad = |m: String| Error::BadFile {
                path: path.display().to_string(),
                what: "feature shard",
                message: m,
            };
            let bytes = std::fs::read(path).map_err(Error::io(path))?;
            let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
            let settings = ExtractSettings::from_metadata(
                meta.metadata().as_ref().unwrap_or(&Default::default()),
                &path.display().to_string(),
            )?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
            let t = st.tensor("features").map_err(|_| {
                Error::Config(format!(
                    "{} holds sign codes, not floats: a linear classifier needs features extracted with --format f32 or f16",
                    path.display()
                ))
            })?;
            let values =
                tensor_floats(&t).ok_or_else(|| bad("features are not f32 or f16".into()))?;
            let d = settings.feature_rows * settings.feature_cols;
            let s = set.get_or_insert_with(|| FeatureSet {
                settings: settings.clone(),
                x: Vec::new(),
                d,
                paths: Vec::new(),
                labels: Vec::new(),
                failed: Vec::new(),
            });
            if !s.settings.same_run(&settings) {
                return Err(Error::Config(format!(
                    "{} comes from an extraction with other settings ({})",
                    path.display(),
                    settings.differences(&s.settings).join("; ")
                )));
            }
            for line in read_manifest(&shard.manifest)? {
                let Some(row) = line.ok_row() else {
                    let reason = line.reason.clone().unwrap_or_default();
                    s.failed.push((line.path.clone(), reason));
                    continue;
                };
                let v = values
                    .get(row * d..(row + 1) * d)
                    .ok_or_else(|| bad(format!("row {row} of {} is missing", line.path)))?;
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(bad(format!(
                        "the feature of {} holds NaN or infinity",
                        line.path
                    )));
                }
                s.x.extend_from_slice(v);
                s.paths.push(line.path.clone());
                s.labels.push(line.label.clone());
            }
        }
        Ok(set.expect("at least one shard"))
    }
}
