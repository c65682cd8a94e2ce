//! The linear classifiers against scikit-learn on a small problem (tests/golden/
//! classifier_sklearn.json, written by tools/make_classifier_golden.py): both optima are
//! unique, so crosspool's dual coordinate descent and L-BFGS must find what liblinear and
//! scikit-learn's lbfgs find.

mod common;

use common::random;
use crosspool::classifier::{train, train_with, Examples, Gram, Kind, Tolerance};
use std::path::Path;

fn golden() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/classifier_sklearn.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The data of make_classifier_golden.py, regenerated: `(x, y)`.
fn data(n: usize, d: usize, k: usize) -> (Vec<f32>, Vec<usize>) {
    let centre = random(k * d, 72);
    let noise = random(n * d, 71);
    let y: Vec<usize> = (0..n).map(|i| i % k).collect();
    let x = (0..n * d)
        .map(|j| noise[j] + 1.5 * centre[y[j / d] * d + j % d])
        .collect();
    (x, y)
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    let mut out = Vec::new();
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|e| out.extend(floats(e))),
        other => out.push(other.as_f64().unwrap()),
    }
    out
}

#[test]
fn svm_and_logistic_regression_find_scikit_learns_optima() {
    let g = golden();
    let n = g["n"].as_u64().unwrap() as usize;
    let d = g["d"].as_u64().unwrap() as usize;
    let k = g["classes"].as_u64().unwrap() as usize;
    let c = g["c"].as_f64().unwrap();
    let (x, y) = data(n, d, k);
    let sum: f64 = x.iter().map(|&v| v as f64).sum();
    assert!(
        (sum - g["x_checksum"].as_f64().unwrap()).abs() < 1e-9,
        "data differ"
    );
    let ex = Examples {
        x: &x,
        d,
        y: &y,
        classes: k,
    };
    let tol = Tolerance {
        eps: 1e-10,
        max_iter: 100_000,
    };

    // Both ways of solving the SVM's dual: on the vectors (used here, n > d) and through the
    // Gram matrix (used when n < d, as with cross-layer features).
    let gram = Gram::of(&ex);
    for (path, svm) in [
        ("primal", train(&ex, Kind::Svm, c, tol).unwrap()),
        (
            "gram",
            train_with(&ex, Some(&gram), Kind::Svm, c, tol).unwrap(),
        ),
    ] {
        let want_w = floats(&g["svm_coef"]);
        let want_b = floats(&g["svm_intercept"]);
        let err = svm
            .weights
            .iter()
            .zip(&want_w)
            .chain(svm.bias.iter().zip(&want_b))
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0, f64::max);
        let scale = want_w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        eprintln!("svm ({path}): largest difference {err:e} (weights up to {scale:.3})");
        // The weights are stored in f32: half an ulp of the largest, and liblinear's own stop.
        assert!(
            err <= 1e-6 * scale,
            "svm ({path}) differs from liblinear by {err:e}"
        );
    }

    let lr = train(&ex, Kind::Logistic, c, tol).unwrap();
    let want_p = floats(&g["logistic_proba"]);
    let got_p: Vec<f64> = (0..n)
        .flat_map(|i| lr.probabilities(&x[i * d..(i + 1) * d]))
        .collect();
    let err = got_p
        .iter()
        .zip(&want_p)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("logistic: largest probability difference {err:e}");
    assert!(
        err <= 1e-6,
        "logistic regression differs from scikit-learn by {err:e}"
    );
}
