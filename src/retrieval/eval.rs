//! Retrieval evaluation in the style of INRIA Holidays and Oxford Buildings: every query is an
//! image of the database, ranked against all the others (itself left out); its ground truth
//! lists the relevant images and, Oxford style, "junk" images that count neither way.
//!
//! Ground-truth files are JSON lines: `{"query": "a.jpg", "relevant": ["b.jpg"], "junk": []}`.
//! A name matches a database path equal to it or ending in `/` + it.

use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One query's ground truth, as indices into the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The query image.
    pub query: usize,
    /// Images that should be retrieved.
    pub relevant: HashSet<usize>,
    /// Images ignored when scoring (neither relevant nor wrong).
    pub junk: HashSet<usize>,
}

/// Finds database paths by the names a ground-truth file uses.
pub struct PathResolver<'a> {
    paths: &'a [String],
    exact: HashMap<&'a str, usize>,
}

impl<'a> PathResolver<'a> {
    /// Indexes `paths` (the database's images, in order).
    pub fn new(paths: &'a [String]) -> Self {
        let exact = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        PathResolver { paths, exact }
    }

    /// The one image named `name`: the path itself, or the only path ending in `/name`.
    pub fn resolve(&self, name: &str) -> Result<usize> {
        if let Some(&i) = self.exact.get(name) {
            return Ok(i);
        }
        let tail = format!("/{}", name.trim_start_matches("./"));
        let hits: Vec<usize> = (0..self.paths.len())
            .filter(|&i| self.paths[i].ends_with(&tail))
            .collect();
        match hits[..] {
            [i] => Ok(i),
            [] => Err(Error::Config(format!(
                "ground truth names '{name}', which is not in the index"
            ))),
            _ => Err(Error::Config(format!(
                "ground truth name '{name}' matches {} images of the index ({} and {}); give more of the path",
                hits.len(),
                self.paths[hits[0]],
                self.paths[hits[1]]
            ))),
        }
    }
}

/// Reads a JSON-lines ground-truth file against the database's `paths`.
pub fn load_ground_truth(path: &Path, paths: &[String]) -> Result<Vec<Query>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let resolver = PathResolver::new(paths);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Error::Config(format!("{}:{}: {why}", path.display(), n + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON ({e})")))?;
        let names = |key: &str| -> Result<HashSet<usize>> {
            match v.get(key) {
                None => Ok(HashSet::new()),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .ok_or_else(|| bad(format!("'{key}' holds a non-string")))
                            .and_then(|s| resolver.resolve(s).map_err(|e| bad(e.to_string())))
                    })
                    .collect(),
                Some(_) => Err(bad(format!("'{key}' is not a list"))),
            }
        };
        let query = v
            .get("query")
            .and_then(|q| q.as_str())
            .ok_or_else(|| bad("no \"query\" string".into()))?;
        let query = resolver.resolve(query).map_err(|e| bad(e.to_string()))?;
        let (mut relevant, junk) = (names("relevant")?, names("junk")?);
        relevant.remove(&query);
        if relevant.is_empty() {
            return Err(bad("the query has no relevant image besides itself".into()));
        }
        out.push(Query {
            query,
            relevant,
            junk,
        });
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "{} lists no queries",
            path.display()
        )));
    }
    Ok(out)
}

/// Average precision of `ranking` (best first, the query already left out), computed as the
/// Oxford Buildings benchmark's `compute_ap` does: junk images are skipped, and precision is
/// integrated over recall with the trapezoidal rule.
pub fn average_precision(ranking: &[usize], q: &Query) -> f64 {
    let positives = q.relevant.len() as f64;
    let (mut old_recall, mut old_precision, mut ap) = (0.0, 1.0, 0.0);
    let (mut hits, mut seen) = (0usize, 0usize);
    for i in ranking {
        if q.junk.contains(i) {
            continue;
        }
        if q.relevant.contains(i) {
            hits += 1;
        }
        let recall = hits as f64 / positives;
        let precision = hits as f64 / (seen + 1) as f64;
        ap += (recall - old_recall) * (old_precision + precision) / 2.0;
        old_recall = recall;
        old_precision = precision;
        seen += 1;
    }
    ap
}

/// Whether the best-ranked image that is not junk is relevant.
pub fn hit_at_1(ranking: &[usize], q: &Query) -> bool {
    ranking
        .iter()
        .find(|i| !q.junk.contains(i))
        .is_some_and(|i| q.relevant.contains(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(relevant: &[usize], junk: &[usize]) -> Query {
        Query {
            query: 0,
            relevant: relevant.iter().copied().collect(),
            junk: junk.iter().copied().collect(),
        }
    }

    #[test]
    fn perfect_ranking_has_ap_one() {
        assert!((average_precision(&[1, 2, 3, 4], &q(&[1, 2], &[])) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ap_matches_hand_computed_trapezoids() {
        // Relevant at ranks 2 and 4 of 4. Precision falls to 0 at rank 1 (recall 0), is 1/2
        // at rank 2 (recall 1/2), 1/3 at rank 3, 2/4 at rank 4 (recall 1). Trapezoids over
        // the recall steps: 0.5 * (0 + 1/2) / 2 + 0.5 * (1/3 + 1/2) / 2 = 1/8 + 5/24 = 1/3.
        let ap = average_precision(&[5, 1, 6, 2], &q(&[1, 2], &[]));
        assert!((ap - 1.0 / 3.0).abs() < 1e-12, "{ap}");
        // Junk at rank 1 is skipped: the same as a perfect ranking.
        let ap = average_precision(&[7, 1, 2, 5], &q(&[1, 2], &[7]));
        assert!((ap - 1.0).abs() < 1e-12, "{ap}");
        // A relevant image never ranked caps recall.
        let ap = average_precision(&[1, 5], &q(&[1, 2], &[]));
        assert!((ap - 0.5).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn hit_at_1_skips_junk() {
        assert!(hit_at_1(&[7, 1], &q(&[1], &[7])));
        assert!(!hit_at_1(&[5, 1], &q(&[1], &[7])));
    }

    #[test]
    fn names_resolve_by_path_suffix() {
        let paths: Vec<String> = ["data/a/x.jpg", "data/b/x.jpg", "data/b/y.jpg"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = PathResolver::new(&paths);
        assert_eq!(r.resolve("y.jpg").unwrap(), 2);
        assert_eq!(r.resolve("a/x.jpg").unwrap(), 0);
        assert_eq!(r.resolve("data/b/x.jpg").unwrap(), 1);
        assert!(r.resolve("x.jpg").is_err());
        assert!(r.resolve("z.jpg").is_err());
    }
}
