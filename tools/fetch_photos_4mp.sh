#!/usr/bin/env bash
# Fetches real 4 MP photographs (2560x1600 JPEGs, baseline and progressive) from Debian's
# wallpaper packages into a directory (default: bench/photos_4mp), one file per distinct
# image: the input of tools/bench_decode.sh. Needs apt-get (no root: `apt-get download`).
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/photos_4mp}"
packages=(plasma-workspace-wallpapers mate-backgrounds)
if [ -n "$(ls "$out"/*.jpg 2>/dev/null)" ]; then
    exit 0
fi
command -v apt-get >/dev/null || { echo "fetch_photos_4mp: needs apt-get (Debian/Ubuntu)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
(cd "$work" && apt-get download "${packages[@]}" >/dev/null 2>"$work/apt.log") || { cat "$work/apt.log" >&2; exit 1; }
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
    dpkg-deb -f "$deb" Package Version | paste -sd' ' >>"$work/versions"
done
# Keep the 2560x1600 JPEGs, each distinct file once, named after its wallpaper.
python3 - "$work/root" "$out" <<'EOF'
import hashlib, pathlib, shutil, struct, sys

root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

def frame(data):
    """(width, height, progressive) from the JPEG's frame header, or None."""
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h, marker == 0xC2
        i += 2 + length
    return None

seen = set()
for p in sorted(root.rglob("*.jp*g")):
    data = p.read_bytes()
    info = frame(data)
    digest = hashlib.sha256(data).hexdigest()
    if info is None or info[:2] != (2560, 1600) or digest in seen:
        continue
    seen.add(digest)
    # .../wallpapers/NAME/contents/images/WxH.jpg (Plasma) or .../NAME.jpg (MATE)
    name = p.parts[-4] if p.parent.name == "images" else p.stem
    shutil.copyfile(p, out / f"{name}.jpg")
print(f"fetch_photos_4mp: {len(seen)} distinct 2560x1600 JPEGs in {out}", file=sys.stderr)
EOF
cp "$work/versions" "$out/PACKAGES.txt"
