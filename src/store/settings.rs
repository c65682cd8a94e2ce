//! The settings an extraction ran with: written to `extract.json` and into every shard's
//! and index's metadata, compared on `--resume`, and read back by `index` and `search` to
//! extract query images the same way.
//!
//! Version 3 (this one) is a JSON object with the fields of [`ExtractSettings`] under their
//! own names; in safetensors metadata it is the value of the key `crosspool.settings`.
//! Version 2 lacked `decode` (its images were decoded at full size: `exact`); a crosspool
//! that reads up to version 2 refuses version 3, so it never resumes a `fast` run exactly.
//! Version 1 (crosspool 0.1.0) was a flat map of `crosspool.*` strings with the output format
//! in Rust's Debug spelling; it is still read. A newer version is refused with a message that
//! says so.

use crate::choice::Choice;
use crate::cpu::Products;
use crate::error::{Error, Result};
use crate::features::{FeatureRequest, FeatureSpec, NormPreset, Pooling};
use crate::gpu::Dtype;
use crate::input::DecodeMode;
use crate::model::Arch;
use crate::pooling::{ChannelPooling, LocalWindow, Quantization};
use crate::store::writer::OutputFormat;
use std::collections::{BTreeMap, HashMap};

/// The settings format this crosspool writes, and the newest it reads.
pub const SETTINGS_VERSION: u32 = 3;

/// The safetensors metadata key that holds the settings as JSON.
pub const METADATA_KEY: &str = "crosspool.settings";

mod window_text {
    //! A local window as `MxN`, the way the command line spells it.
    use crate::pooling::LocalWindow;

    pub fn serialize<S: serde::Serializer>(w: &LocalWindow, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(w)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LocalWindow, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        LocalWindow::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Decoding before settings version 3, which had no other.
fn full_size_decoding() -> DecodeMode {
    DecodeMode::Exact
}

/// How an extraction computed and stored its features.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractSettings {
    /// Settings format ([`SETTINGS_VERSION`] when written by this crosspool).
    pub version: u32,
    /// Network.
    pub arch: Arch,
    /// Weights file, absolute as the run saw it.
    pub weights: String,
    /// The weights file's content fingerprint (`ModelWeights::fingerprint`); `None` in
    /// settings from version 1, which did not record it.
    #[serde(default)]
    pub weights_fingerprint: Option<String>,
    /// Layers: t and t+1 for cross-layer pooling, one for the baselines.
    pub layers: Vec<String>,
    /// Pooling method.
    pub pooling: Pooling,
    /// Cross-layer pooling's combination over units; left out when it is the sum (as in
    /// settings written before it existed, which read as the sum).
    #[serde(default, skip_serializing_if = "ChannelPooling::is_sum")]
    pub channel_pooling: ChannelPooling,
    /// Local-feature window on layer t.
    #[serde(with = "window_text")]
    pub window: LocalWindow,
    /// Finest pyramid level (sum/max pooling).
    pub levels: u32,
    /// Normalisation.
    pub norm: NormPreset,
    /// Images are resized to `size` x `size`.
    pub size: u32,
    /// How JPEGs were decoded; `exact` in settings from before version 3.
    #[serde(default = "full_size_decoding")]
    pub decode: DecodeMode,
    /// PCA file, absolute, if one was applied.
    pub pca: Option<String>,
    /// The PCA file's content fingerprint (as the weights'); left out without a PCA and in
    /// settings written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pca_fingerprint: Option<String>,
    /// AConv layer file (from `train-aconv`), absolute, when it guides the pooling
    /// (`--layers fc6,aconv`); left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aconv: Option<String>,
    /// The AConv layer file's content fingerprint; left out as [`Self::pca_fingerprint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aconv_fingerprint: Option<String>,
    /// Stored format.
    pub format: OutputFormat,
    /// How the network stored weights and activations between layers (`--precision`);
    /// left out when f32, as in settings written before f16 existed.
    #[serde(default, skip_serializing_if = "Dtype::is_f32")]
    pub precision: Dtype,
    /// What the CPU backend's convolutions multiplied (`--precision bf16`); left out when
    /// f32, as in settings written before bf16 existed.
    #[serde(default, skip_serializing_if = "Products::is_f32")]
    pub products: Products,
    /// Rows of each image's feature (pooling channels, regions).
    pub feature_rows: usize,
    /// Values per row before any packing.
    pub feature_cols: usize,
}

impl ExtractSettings {
    /// The feature these settings describe.
    pub fn spec(&self) -> Result<FeatureSpec> {
        self.request().spec(self.arch)
    }

    /// The feature these settings describe, as asked for.
    pub fn request(&self) -> FeatureRequest {
        FeatureRequest {
            layers: self.layers.clone(),
            pooling: self.pooling,
            channel_pooling: self.channel_pooling,
            window: self.window,
            levels: self.levels,
            norm: self.norm,
        }
    }

    /// The code format of the stored features, if they are sign codes.
    pub fn codes(&self) -> Option<Quantization> {
        self.format.codes()
    }

    /// The same settings in this version's format (what this crosspool writes, whatever
    /// version they were read from).
    fn current(&self) -> Self {
        ExtractSettings {
            version: SETTINGS_VERSION,
            ..self.clone()
        }
    }

    /// As `extract.json` holds them.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.current()).expect("settings serialise to JSON")
    }

    /// Reads settings from `text` (an `extract.json`, or the metadata value), of any version
    /// this crosspool knows. `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let bad = |why: String| Error::Config(format!("{origin}: {why}"));
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| bad(format!("not crosspool extraction settings ({e})")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("not crosspool extraction settings (not a JSON object)".into()))?;
        match obj.get("version") {
            None if obj.contains_key("crosspool.arch") => {
                let flat: BTreeMap<String, String> = obj
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                Self::from_version1(&flat).map_err(|e| bad(e.to_string()))
            }
            None => Err(bad("not crosspool extraction settings (no version)".into())),
            Some(v) => {
                let version = v
                    .as_u64()
                    .ok_or_else(|| bad(format!("settings version {v} is not a number")))?;
                if version > SETTINGS_VERSION as u64 {
                    return Err(bad(format!(
                        "written by a newer crosspool (settings version {version}; this one reads up to {SETTINGS_VERSION}): upgrade crosspool"
                    )));
                }
                if version < 2 {
                    return Err(bad(format!(
                        "settings version {version} is not one crosspool wrote"
                    )));
                }
                serde_json::from_value(value.clone())
                    .map_err(|e| bad(format!("bad settings ({e})")))
            }
        }
    }

    /// As safetensors metadata (shards, indexes).
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([(
            METADATA_KEY.to_string(),
            serde_json::to_string(&self.current()).expect("settings serialise to JSON"),
        )])
    }

    /// Reads the settings from safetensors metadata written by any version this crosspool
    /// knows; `origin` names the file in errors.
    pub fn from_metadata(meta: &HashMap<String, String>, origin: &str) -> Result<Self> {
        if let Some(json) = meta.get(METADATA_KEY) {
            return Self::from_json(json, origin);
        }
        if meta.contains_key("crosspool.arch") {
            let flat: BTreeMap<String, String> =
                meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            return Self::from_version1(&flat).map_err(|e| Error::Config(format!("{origin}: {e}")));
        }
        Err(Error::Config(format!(
            "{origin}: holds no crosspool extraction settings (not written by crosspool extract?)"
        )))
    }

    /// The field names and values that differ from `other` (the settings before these),
    /// for telling a user what changed: `size: 448 before, 224 now`.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        self.differing(other)
            .into_iter()
            .map(|(k, mine, theirs)| format!("{k}: {theirs} before, {mine} now"))
            .collect()
    }

    /// The field names and values that differ from `other`, each side named:
    /// `size: the classifier's 32, the features' 48` for `mine` "the classifier's" and
    /// `theirs` "the features'".
    pub fn compared_with(&self, other: &Self, mine: &str, theirs: &str) -> Vec<String> {
        self.differing(other)
            .into_iter()
            .map(|(k, m, t)| format!("{k}: {mine} {m}, {theirs} {t}"))
            .collect()
    }

    /// `(field, this value, other's value)` of every field that differs, as JSON text.
    fn differing(&self, other: &Self) -> Vec<(String, String, String)> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(other).unwrap_or_default(),
        );
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return Vec::new();
        };
        // Fields left out at their default are in one object only: take the keys of both.
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let null = serde_json::Value::Null;
        keys.into_iter()
            .filter_map(|k| {
                let (v, before) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
                let unknown = k.ends_with("_fingerprint") && (v.is_null() || before.is_null());
                (k != "version" && !unknown && v != before)
                    .then(|| (k.clone(), v.to_string(), before.to_string()))
            })
            .collect()
    }

    /// Version 1: flat `crosspool.*` strings.
    fn from_version1(m: &BTreeMap<String, String>) -> Result<Self> {
        let get = |k: &str| {
            m.get(&format!("crosspool.{k}"))
                .map(String::as_str)
                .ok_or_else(|| Error::Config(format!("settings (version 1) lack crosspool.{k}")))
        };
        fn value<V: Choice>(key: &str, v: &str) -> Result<V> {
            V::parse(v, true).ok_or_else(|| {
                Error::Config(format!("crosspool.{key} = '{v}' is not a known value"))
            })
        }
        let number = |k: &str| -> Result<usize> {
            get(k)?
                .parse()
                .map_err(|_| Error::Config(format!("crosspool.{k} is not a number")))
        };
        let format = match get("format")? {
            "F32" => OutputFormat::F32,
            "F16" => OutputFormat::F16,
            "Sign2" => OutputFormat::Sign2,
            "Bits1" => OutputFormat::Bits1,
            other => value("format", other)?,
        };
        let pca = get("pca")?;
        Ok(ExtractSettings {
            version: 1,
            arch: value("arch", get("arch")?)?,
            weights: get("weights")?.to_string(),
            weights_fingerprint: None,
            pca_fingerprint: None,
            aconv_fingerprint: None,
            layers: get("layers")?.split(',').map(String::from).collect(),
            pooling: value("pooling", get("pooling")?)?,
            channel_pooling: ChannelPooling::Sum,
            window: LocalWindow::parse(get("window")?)?,
            levels: number("levels")? as u32,
            norm: value("norm", get("norm")?)?,
            size: number("size")? as u32,
            decode: DecodeMode::Exact,
            pca: (!pca.is_empty()).then(|| pca.to_string()),
            aconv: None,
            format,
            precision: Dtype::F32,
            products: Products::F32,
            feature_rows: number("feature_rows")?,
            feature_cols: number("feature_cols")?,
        })
    }

    /// Equal apart from the version they were written in (a run started by an older
    /// crosspool can be resumed by this one) and, where one of them lacks it, the weights
    /// fingerprint.
    pub fn same_run(&self, other: &Self) -> bool {
        // A fingerprint one side lacks (settings written before it was recorded) is unknown,
        // not different.
        let known = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(_), Some(_)) => a.clone(),
            _ => b.clone(),
        };
        ExtractSettings {
            version: other.version,
            weights_fingerprint: known(&self.weights_fingerprint, &other.weights_fingerprint),
            pca_fingerprint: known(&self.pca_fingerprint, &other.pca_fingerprint),
            aconv_fingerprint: known(&self.aconv_fingerprint, &other.aconv_fingerprint),
            ..self.clone()
        } == *other
    }

    /// The settings in a feature shard's metadata (`path` names it in errors).
    pub fn of_shard(
        meta: &std::collections::HashMap<String, String>,
        path: &std::path::Path,
    ) -> Result<Self> {
        Self::from_metadata(meta, &path.display().to_string())
    }

    /// Refuses the shard at `path` unless it was extracted as `first` (the first shard read,
    /// kept here when `None`): every reader of a directory's parts reads them as one set of
    /// features only if they are one.
    pub fn check_one_set(
        &self,
        path: &std::path::Path,
        first: &mut Option<(Self, std::path::PathBuf)>,
    ) -> Result<()> {
        match first {
            Some((s0, p0)) if !self.same_run(s0) => Err(Error::Config(format!(
                "{} was extracted otherwise than {} ({}): the shards are not one set of features",
                path.display(),
                p0.display(),
                self.compared_with(s0, "this shard's", "the first's")
                    .join("; ")
            ))),
            Some(_) => Ok(()),
            None => {
                *first = Some((self.clone(), path.to_path_buf()));
                Ok(())
            }
        }
    }

    /// The input files whose content these settings and `before`'s both fingerprint, and
    /// that changed: `(what, path, fingerprint before, now)`.
    pub fn changed_files(&self, before: &Self) -> Vec<(&'static str, String, String, String)> {
        [
            (
                "weights",
                Some(&self.weights),
                &before.weights_fingerprint,
                &self.weights_fingerprint,
            ),
            (
                "PCA",
                self.pca.as_ref(),
                &before.pca_fingerprint,
                &self.pca_fingerprint,
            ),
            (
                "AConv layer",
                self.aconv.as_ref(),
                &before.aconv_fingerprint,
                &self.aconv_fingerprint,
            ),
        ]
        .into_iter()
        .filter_map(|(what, path, was, now)| match (path, was, now) {
            (Some(p), Some(was), Some(now)) if was != now => {
                Some((what, p.clone(), was.clone(), now.clone()))
            }
            _ => None,
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choice::value_name;

    fn sample() -> ExtractSettings {
        ExtractSettings {
            version: SETTINGS_VERSION,
            arch: Arch::Vgg16,
            weights: "/w/vgg16.safetensors".into(),
            weights_fingerprint: Some("fnv1a64-words:0123456789abcdef:100".into()),
            pca_fingerprint: None,
            aconv_fingerprint: None,
            layers: vec!["conv5_2".into(), "conv5_3".into()],
            pooling: Pooling::CrossLayer,
            channel_pooling: ChannelPooling::Sum,
            window: LocalWindow::new(3, 3).unwrap(),
            levels: 0,
            norm: NormPreset::SqrtL2,
            size: 448,
            decode: DecodeMode::Fast,
            pca: None,
            aconv: None,
            format: OutputFormat::Bits1,
            precision: Dtype::F32,
            products: Default::default(),
            feature_rows: 512,
            feature_cols: 4608,
        }
    }

    #[test]
    fn fields_and_values_have_stable_names() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(v["decode"], "fast");
        assert_eq!(v["arch"], "vgg16");
        assert_eq!(v["pooling"], "cross-layer");
        assert_eq!(v["window"], "3x3");
        assert_eq!(v["norm"], "sqrt-l2");
        assert_eq!(v["format"], "bits1");
        assert_eq!(v["pca"], serde_json::Value::Null);
        // The names settings files use are the names the command line takes.
        assert_eq!(value_name(&NormPreset::SqrtL2), "sqrt-l2");
        assert_eq!(value_name(&Pooling::CrossLayer), "cross-layer");
        assert_eq!(value_name(&OutputFormat::Bits1), "bits1");
    }

    #[test]
    fn round_trips_through_json_and_metadata() {
        let f16 = ExtractSettings {
            precision: Dtype::F16,
            ..sample()
        };
        for s in [sample(), f16] {
            assert_eq!(ExtractSettings::from_json(&s.to_json(), "t").unwrap(), s);
            assert_eq!(
                ExtractSettings::from_metadata(&s.to_metadata(), "t").unwrap(),
                s
            );
        }
    }

    #[test]
    fn precision_is_written_only_when_f16() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert!(v.get("precision").is_none(), "{v}");
        let f16 = ExtractSettings {
            precision: Dtype::F16,
            ..sample()
        };
        let v: serde_json::Value = serde_json::from_str(&f16.to_json()).unwrap();
        assert_eq!(v["precision"], "f16");
        // A run in another precision is another run (resume refuses to mix them).
        assert!(!f16.same_run(&sample()));
    }

    #[test]
    fn products_are_written_only_when_bf16() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert!(v.get("products").is_none(), "{v}");
        let bf16 = ExtractSettings {
            products: Products::Bf16,
            ..sample()
        };
        let v: serde_json::Value = serde_json::from_str(&bf16.to_json()).unwrap();
        assert_eq!(v["products"], "bf16");
        assert_eq!(
            ExtractSettings::from_json(&bf16.to_json(), "t").unwrap(),
            bf16
        );
        assert_eq!(
            ExtractSettings::from_metadata(&bf16.to_metadata(), "t").unwrap(),
            bf16
        );
        // bf16 products are another run, as f16 storage is.
        assert!(!bf16.same_run(&sample()));
    }

    #[test]
    fn newer_unknown_and_foreign_settings_are_refused() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["version"] = (SETTINGS_VERSION + 1).into();
        let e = ExtractSettings::from_json(&v.to_string(), "x.json").unwrap_err();
        assert!(e.to_string().contains("newer crosspool"), "{e}");
        v["version"] = SETTINGS_VERSION.into();
        v["colour"] = "blue".into();
        let e = ExtractSettings::from_json(&v.to_string(), "x.json").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = ExtractSettings::from_json("{\"a\": 1}", "x.json").unwrap_err();
        assert!(e.to_string().contains("not crosspool"), "{e}");
        let e = ExtractSettings::from_json("[1]", "x.json").unwrap_err();
        assert!(e.to_string().contains("not crosspool"), "{e}");
    }

    #[test]
    fn version_one_is_read() {
        let old = r#"{"crosspool.arch": "vgg16", "crosspool.feature_cols": "4608",
            "crosspool.feature_rows": "512", "crosspool.format": "Bits1",
            "crosspool.layers": "conv5_2,conv5_3", "crosspool.levels": "0",
            "crosspool.norm": "sqrt-l2", "crosspool.pca": "", "crosspool.pooling": "cross-layer",
            "crosspool.size": "448", "crosspool.weights": "/w/vgg16.safetensors",
            "crosspool.window": "3x3"}"#;
        let s = ExtractSettings::from_json(old, "extract.json").unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.decode, DecodeMode::Exact);
        let sample = || ExtractSettings {
            decode: DecodeMode::Exact,
            ..sample()
        };
        assert!(s.same_run(&sample()));
        assert!(sample().same_run(&s));
        // Written again, they are in this version's format.
        let again = ExtractSettings::from_json(&s.to_json(), "t").unwrap();
        assert_eq!(again.version, SETTINGS_VERSION);
        assert!(again.same_run(&s));
        let other = ExtractSettings {
            size: 224,
            ..sample()
        };
        assert!(!other.same_run(&s));
        assert_eq!(
            other.differences(&sample()),
            vec!["size: 448 before, 224 now"]
        );
    }

    #[test]
    fn channel_pooling_is_written_only_when_it_is_not_the_sum() {
        let sum = sample();
        assert!(!sum.to_json().contains("channel_pooling"));
        let max = ExtractSettings {
            channel_pooling: ChannelPooling::Max,
            ..sample()
        };
        assert!(max.to_json().contains(r#""channel_pooling": "max""#));
        assert_eq!(
            ExtractSettings::from_json(&max.to_json(), "t").unwrap(),
            max
        );
        assert!(!max.same_run(&sum));
        // Named whichever side leaves it out.
        let changed = vec![r#"channel_pooling: null before, "max" now"#];
        assert_eq!(max.differences(&sum), changed);
        assert_eq!(
            sum.differences(&max),
            vec![r#"channel_pooling: "max" before, null now"#]
        );
        let spec = max.spec().unwrap();
        assert!(spec.repr.to_string().contains("max channel pooling"));
        let gram = ExtractSettings {
            pooling: Pooling::Gram,
            ..max
        };
        assert!(gram
            .spec()
            .unwrap_err()
            .to_string()
            .contains("--channel-pooling"));
    }

    #[test]
    fn version_two_decoded_at_full_size() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["version"] = 2.into();
        v.as_object_mut().unwrap().remove("decode");
        let s = ExtractSettings::from_json(&v.to_string(), "extract.json").unwrap();
        assert_eq!(s.decode, DecodeMode::Exact);
        assert!(!s.same_run(&sample()));
        assert_eq!(
            sample().differences(&s),
            vec![r#"decode: "exact" before, "fast" now"#]
        );
    }

    #[test]
    fn differences_name_each_side() {
        let (trained, extracted) = (
            ExtractSettings {
                size: 32,
                ..sample()
            },
            ExtractSettings {
                size: 48,
                ..sample()
            },
        );
        assert_eq!(
            trained.compared_with(&extracted, "the classifier's", "the features'"),
            vec!["size: the classifier's 32, the features' 48"]
        );
        assert_eq!(
            extracted.differences(&trained),
            vec!["size: 32 before, 48 now"]
        );
    }
}
