#!/usr/bin/env python3
"""Writes tests/golden/classifier_sklearn.json: what scikit-learn's liblinear and lbfgs
solvers find on a small 3-class problem, for tests/classifier.rs to hold crosspool's linear
SVM and logistic regression to.

The data come from the SplitMix64 generator of tests/common (via make_golden.py), so the test
regenerates them bit for bit: 60 vectors of 6 values, x = random(60*6, 71) + 1.5 *
centre[class], centre = random(3*6, 72), class i % 3 (overlapping clusters, so the margins
and C matter).

- LinearSVC(C, loss="squared_hinge", dual=True, fit_intercept=True, intercept_scaling=1):
  one-vs-rest, the bias a regularised weight on a constant feature (LIBLINEAR solver 1).
- LogisticRegression(C) with lbfgs: multinomial, the bias not regularised.
Both run to tol 1e-12 so that the optimum, which is unique, is what is compared.

    pip install scikit-learn numpy torch   # torch only for make_golden's imports
    python3 tools/make_classifier_golden.py --out tests/golden
"""
import argparse
import json
import os

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from make_golden import random

N, D, K, C = 60, 6, 3, 0.7


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden")
    args = ap.parse_args()
    centre = random(K * D, 72).reshape(K, D).astype(np.float32)
    y = np.arange(N) % K
    x = (random(N * D, 71).reshape(N, D) + np.float32(1.5) * centre[y]).astype(np.float32)
    xd = x.astype(np.float64)
    svm = LinearSVC(C=C, loss="squared_hinge", dual=True, tol=1e-12, max_iter=10**7,
                    fit_intercept=True, intercept_scaling=1.0).fit(xd, y)
    lr = LogisticRegression(C=C, tol=1e-12, max_iter=10**5).fit(xd, y)
    out = {
        "sklearn": sklearn.__version__, "n": N, "d": D, "classes": K, "c": C,
        "svm_coef": svm.coef_.tolist(), "svm_intercept": svm.intercept_.tolist(),
        "svm_train_accuracy": float(svm.score(xd, y)),
        "logistic_proba": lr.predict_proba(xd).tolist(),
        "logistic_train_accuracy": float(lr.score(xd, y)),
        "x_checksum": float(xd.sum()),
    }
    path = os.path.join(args.out, "classifier_sklearn.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(path, out["svm_train_accuracy"], out["logistic_train_accuracy"])


if __name__ == "__main__":
    main()
