#!/usr/bin/env bash
# One-command setup: software Vulkan if no driver is present, the real VGG16 weights, a
# release build, and a check that an adapter opens.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_vulkan.sh
bash tools/fetch_weights.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build --release
./target/release/crosspool info
