//! Choosing the regularisation constant C by stratified k-fold cross-validation.

use super::linear::{gram_pays, train_with, Examples, Gram, Kind, Tolerance};
use crate::error::{Error, Result};

/// The default grid of C: 10^-6 … 10^4. Features normalised as the paper does have vectors of
/// norm 1 (global L2) to a few hundred (per-channel L2 over 512 channels); the useful C
/// scales inversely with the squared norm, so the grid spans both ends.
pub const DEFAULT_GRID: [f64; 11] = [
    1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4,
];

/// One C's cross-validated accuracy.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CvScore {
    /// The constant.
    pub c: f64,
    /// Mean accuracy over the held-out folds.
    pub accuracy: f64,
}

/// The fold of each example: within each class, examples in order go to folds 0, 1, …, k−1,
/// 0, …, so every fold holds each class in proportion and the split is reproducible.
pub fn stratified_folds(y: &[usize], classes: usize, k: usize) -> Vec<usize> {
    let mut seen = vec![0usize; classes];
    y.iter()
        .map(|&c| {
            let f = seen[c] % k;
            seen[c] += 1;
            f
        })
        .collect()
}

/// The folds to use: `wanted`, or fewer when the smallest class has fewer examples, so that
/// every fold holds out each class. Fewer than 2 examples of some class is an error.
pub fn fold_count(y: &[usize], classes: usize, wanted: usize) -> Result<usize> {
    let smallest = (0..classes)
        .map(|c| y.iter().filter(|&&v| v == c).count())
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0);
    if smallest < 2 || wanted < 2 {
        return Err(Error::Config(format!(
            "cross-validation needs at least 2 folds and 2 examples of every class; the smallest class has {smallest}"
        )));
    }
    Ok(wanted.min(smallest))
}

/// Cross-validates every C of `grid`; returns the best (the smallest C among equal
/// accuracies: the simplest model) and every score.
pub fn select_c(
    ex: &Examples<'_>,
    kind: Kind,
    grid: &[f64],
    folds: usize,
    tol: Tolerance,
) -> Result<(f64, Vec<CvScore>)> {
    if grid.is_empty() {
        return Err(Error::Config("no C to cross-validate".into()));
    }
    let k = fold_count(ex.y, ex.classes, folds)?;
    let fold = stratified_folds(ex.y, ex.classes, k);
    // One Gram matrix for every fold and C.
    let gram = (kind == Kind::Svm && gram_pays(ex)).then(|| Gram::of(ex));
    let mut scores = Vec::with_capacity(grid.len());
    for &c in grid {
        let mut correct = 0.0;
        for f in 0..k {
            let (mut tx, mut ty, mut held, mut kept) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (i, &fi) in fold.iter().enumerate() {
                if fi == f {
                    held.push(i);
                } else {
                    tx.extend_from_slice(&ex.x[i * ex.d..(i + 1) * ex.d]);
                    ty.push(ex.y[i]);
                    kept.push(i);
                }
            }
            let part = Examples {
                x: &tx,
                d: ex.d,
                y: &ty,
                classes: ex.classes,
            };
            let sub = gram.as_ref().map(|g| g.subset(&kept));
            let m = train_with(&part, sub.as_ref(), kind, c, tol)?;
            let right = held
                .iter()
                .filter(|&&i| m.predict(&ex.x[i * ex.d..(i + 1) * ex.d]) == ex.y[i])
                .count();
            correct += right as f64 / held.len() as f64;
        }
        scores.push(CvScore {
            c,
            accuracy: correct / k as f64,
        });
    }
    Ok((best_c(&scores), scores))
}

/// The C of the best accuracy, the smallest among equals (the simplest model).
fn best_c(scores: &[CvScore]) -> f64 {
    scores
        .iter()
        .fold(None::<&CvScore>, |b, s| match b {
            Some(b) if b.accuracy > s.accuracy || (b.accuracy == s.accuracy && b.c <= s.c) => {
                Some(b)
            }
            _ => Some(s),
        })
        .map_or(1.0, |s| s.c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_and_bounded_by_the_smallest_class() {
        let y = [0, 0, 0, 1, 1, 1, 1, 2, 2];
        assert_eq!(stratified_folds(&y, 3, 2), vec![0, 1, 0, 0, 1, 0, 1, 0, 1]);
        assert_eq!(fold_count(&y, 3, 5).unwrap(), 2);
        let e = fold_count(&[0, 0, 1], 2, 5).unwrap_err().to_string();
        assert!(e.contains("smallest class has 1"), "{e}");
    }

    #[test]
    fn chooses_a_c_that_separates_and_the_smallest_among_ties() {
        // Two classes on either side of x0 = 0, with a noise dimension.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..20 {
            let side = if i % 2 == 0 { 1.0 } else { -1.0 };
            x.extend([side * (1.0 + i as f32 / 20.0), ((i * 7) % 5) as f32 - 2.0]);
            y.push(i % 2);
        }
        let ex = Examples {
            x: &x,
            d: 2,
            y: &y,
            classes: 2,
        };
        let (c, scores) =
            select_c(&ex, Kind::Svm, &[1e-6, 1.0, 100.0], 4, Tolerance::default()).unwrap();
        // Separable: every C classifies the held-out folds right, and the smallest wins.
        assert!(scores.iter().all(|s| s.accuracy == 1.0), "{scores:?}");
        assert_eq!(c, 1e-6);
        let s = |c, accuracy| CvScore { c, accuracy };
        assert_eq!(best_c(&[s(10.0, 0.5), s(0.1, 0.9), s(1.0, 0.9)]), 0.1);
        assert_eq!(best_c(&[s(10.0, 0.95), s(0.1, 0.9)]), 10.0);
    }
}
