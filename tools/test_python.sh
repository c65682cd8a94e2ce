#!/usr/bin/env bash
# Builds the Python package's wheel, installs it in a fresh virtual environment and runs its
# pytest suite against the `crosspool` binary built from the same tree. Needs Rust, Python 3.9+
# with venv, the real VGG16 (tools/fetch_weights.sh), an adapter or the CPU backend, and
# Java 17+ for the Spark test (tools/install_java.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# maturin in a virtual environment of its own, so the test environment holds only the wheel.
"$PYTHON" -m venv "$work/build"
"$work/build/bin/pip" install --quiet "maturin>=1.9,<2"
"$work/build/bin/maturin" build --release -m python/Cargo.toml -o "$work/dist" \
    --interpreter "$work/build/bin/python" --compatibility linux

cargo build --release --quiet --bin crosspool

"$PYTHON" -m venv "$work/test"
# Ray Data for crosspool.ray's tests (a local 2-CPU cluster); pyspark, pandas and pyarrow for
# crosspool.spark's (a local-mode session, which runs on Java).
wheel=("$work"/dist/crosspool-*.whl)
"$work/test/bin/pip" install --quiet "${wheel[0]}[test,ray,spark]"
# From outside the source tree, so `import crosspool` finds the installed wheel.
(cd "$work" && CROSSPOOL_BIN="$OLDPWD/target/release/crosspool" \
    "$work/test/bin/python" -m pytest -q "$OLDPWD/python/tests")
