#!/usr/bin/env bash
# Installs what building crosspool needs besides Rust: CMake (libjpeg-turbo, the JPEG decoder
# of `--decode fast`, is built from the source its crate bundles) and NASM (libjpeg-turbo's
# SIMD code; without it the build still works, with slower decoding). Debian/Ubuntu only;
# elsewhere it says what to install. Safe to run again.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v nasm >/dev/null 2>&1 || missing+=(nasm)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
bash "$(dirname "$0")/apt_install.sh" install_build_deps \
    "please install ${missing[*]} (CMake and a C compiler are needed to build libjpeg-turbo; NASM for its SIMD code)" \
    "${missing[@]}"
