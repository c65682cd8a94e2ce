//! Labelled features from an extraction's output directory: every image recorded `ok` in the
//! manifests, with its stored feature as one vector and the label `extract --labels` wrote.

use crate::error::{Error, Result};
use crate::store::shards::{bad_shard, for_each_shard};
use crate::store::ExtractSettings;
use std::path::Path;

/// The features of one extraction, one vector per image.
pub struct FeatureSet {
    /// The settings the features were extracted with.
    pub settings: ExtractSettings,
    /// `images * d` values.
    pub x: Vec<f32>,
    /// Vector length (`feature_rows * feature_cols`).
    pub d: usize,
    /// Each image's name: its path as its manifest line holds it, `TAR/MEMBER` for a tar
    /// member.
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
        let (mut x, mut paths, mut labels, mut failed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let settings = for_each_shard(dir, |shard| {
            let path = shard.path;
            let t = shard.tensors.tensor("features").ok_or_else(|| {
                Error::Config(format!(
                    "{} holds sign codes, not floats: a linear classifier needs features extracted with --format f32 or f16",
                    path.display()
                ))
            })?;
            let values = t
                .to_f32()
                .ok_or_else(|| bad_shard(path, "features are not f32 or f16"))?;
            let d = shard.settings.feature_rows * shard.settings.feature_cols;
            for line in shard.lines {
                let Some(row) = line.ok_row() else {
                    let reason = line.reason.clone().unwrap_or_default();
                    failed.push((line.name(), reason));
                    continue;
                };
                let v = values.get(row * d..(row + 1) * d).ok_or_else(|| {
                    bad_shard(path, format!("row {row} of {} is missing", line.name()))
                })?;
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(bad_shard(
                        path,
                        format!("the feature of {} holds NaN or infinity", line.name()),
                    ));
                }
                x.extend_from_slice(v);
                paths.push(line.name());
                labels.push(line.label);
            }
            Ok(())
        })?;
        Ok(FeatureSet {
            d: settings.feature_rows * settings.feature_cols,
            settings,
            x,
            paths,
            labels,
            failed,
        })
    }
}
