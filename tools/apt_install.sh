#!/usr/bin/env bash
# Installs Debian packages for the tools/install_*.sh scripts, as root or through sudo, quietly.
# Usage: apt_install.sh [--no-recommends] CALLER ELSEWHERE PACKAGE...
# Without apt-get it prints "CALLER: ELSEWHERE" (what to install by hand) and fails.
set -euo pipefail
options=(-y -qq)
if [ "${1:-}" = --no-recommends ]; then
    options+=(--no-install-recommends)
    shift
fi
caller="$1" elsewhere="$2"
shift 2
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$caller: $elsewhere" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
echo "$caller: installing $*" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install "${options[@]}" "$@" >/dev/null
