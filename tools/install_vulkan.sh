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
# Mesa's software Vulkan (lavapipe) and the Vulkan loader.
bash "$(dirname "$0")/apt_install.sh" install_vulkan \
    "no Vulkan driver found and no apt-get here; install your GPU driver or Mesa's software Vulkan (mesa-vulkan-drivers / vulkan-swrast)" \
    mesa-vulkan-drivers libvulkan1
