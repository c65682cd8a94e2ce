#!/usr/bin/env bash
# One-command setup: software Vulkan if no driver is present, CMake and NASM for the JPEG
# decoder's build, the real VGG16 weights, SPIRV-Tools' validator (for the tests), a release
# build, a check that an adapter opens, and features extracted from the sample photos.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_vulkan.sh
bash tools/install_build_deps.sh
bash tools/fetch_weights.sh
bash tools/install_spirv_val.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build --release
./target/release/crosspool info
# The main job on real photos: cross-layer features of VGG16 (conv5_2 x conv5_3) for the
# sample photos, into features/ (about a second on two cores: with only software Vulkan,
# `extract --device auto` runs the native CPU backend).
rm -rf features
./target/release/crosspool extract --weights weights/vgg16_hed.safetensors --size 224 --out features tests/data/photos
ls -l features
