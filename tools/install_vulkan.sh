#!/usr/bin/env bash
# Installs a Vulkan loader and Mesa's software Vulkan (lavapipe) when no Vulkan driver is
# present, so crosspool runs on machines without a GPU. Debian/Ubuntu only; elsewhere it says
# what to install. Safe to run again.
set -euo pipefail

have_icd() {
    ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json \
        >/dev/null 2>&1
}
have_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; }

if have_icd && have_loader; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_vulkan: no Vulkan driver found and no apt-get here;" \
        "install your GPU driver or Mesa's software Vulkan (mesa-vulkan-drivers / vulkan-swrast)" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
echo "install_vulkan: installing mesa-vulkan-drivers (software Vulkan) and the Vulkan loader" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
