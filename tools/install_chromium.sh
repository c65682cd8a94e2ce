#!/usr/bin/env bash
# Installs Debian's Chromium for the browser check of `crosspool serve`'s page
# (tools/browser_check.sh), and playwright-core (the driver alone, no browser download) from
# the npm registry into tools/.browser. Debian/Ubuntu with Node.js and npm; elsewhere it says
# what to install. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    bash tools/apt_install.sh --no-recommends install_chromium \
        "please install Chromium (the browser check drives it headless)" chromium
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "install_chromium: please install Node.js and npm (the browser check runs playwright-core)" >&2
    exit 1
fi
if [ ! -d tools/.browser/node_modules/playwright-core ]; then
    mkdir -p tools/.browser
    (cd tools/.browser && npm install --silent --no-audit --no-fund playwright-core@1.65.2 >/dev/null)
fi
chromium --version
