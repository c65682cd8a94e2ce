#!/usr/bin/env bash
# Packs what tools/device_check.sh needs on a machine without Rust, within the device tool's
# 64 MiB carry limit (the tracked tree included):
#   .device/crosspool.xz                  the release binary, stripped and xz-compressed
#                                         (120 MB with debug info -> about 4 MB);
#   .device/vgg16_hed_f16.safetensors     the real VGG16 trunk as f16 (29 MB instead of 59:
#                                         the f32 and f16 runs then read the same values, so
#                                         the fidelity check measures f16 storage alone);
#   .gl/*.deb                             the Vulkan loader (the device image has none).
# Both folders are git-ignored; name them in the run's carry: [".device", ".gl"].
# Safe to run again (it rebuilds the binary if the sources changed).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
mkdir -p .device
strip -o .device/crosspool.stripped target/release/crosspool
python3 -c 'import lzma, sys; lzma.open(sys.argv[2], "wb", preset=6).write(open(sys.argv[1], "rb").read())' \
    .device/crosspool.stripped .device/crosspool.xz
rm .device/crosspool.stripped
bash tools/fetch_weights.sh
if [ ! -f .device/vgg16_hed_f16.safetensors ] ||
    [ weights/vgg16_hed.safetensors -nt .device/vgg16_hed_f16.safetensors ]; then
    weights/.venv/bin/python tools/weights_to_f16.py weights/vgg16_hed.safetensors \
        .device/vgg16_hed_f16.safetensors
fi
if [ ! -f .gl/done ]; then
    # The loader packages for amd64 whatever this machine is (the device is x86-64).
    mkdir -p .gl /tmp/amd64/partial
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
    apt-get "${o[@]}" update -qq
    (cd .gl && apt-get "${o[@]}" download libvulkan1 >/dev/null)
    touch .gl/done
fi
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .device .gl | tail -1 | cut -f1)
total=$((tracked + carried))
echo "device_pack: tracked files $((tracked >> 20)) MiB + .device and .gl $((carried >> 20)) MiB = $((total >> 20)) MiB of 64"
if [ "$total" -gt $((64 << 20)) ]; then
    echo "device_pack: over the 64 MiB the device tool carries" >&2
    exit 1
fi
ls -la .device .gl
echo 'device_pack: run with carry [".device", ".gl"]: bash tools/device_check.sh'
