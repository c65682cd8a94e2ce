#!/usr/bin/env python3
"""Writes tests/data/scenes/: a small labelled image set for classification, one class per
photograph, in the protocol of the Brodatz and KTH-TIPS texture sets (the images of a class
are views of one scene), with training and test views taken from disjoint halves.

The photographs are the 2560x1600 wallpapers of Debian's plasma-workspace-wallpapers and
mate-backgrounds packages that tools/fetch_photos_4mp.sh collects (17 distinct scenes: a
water drop, lakes at dusk, a jetty in fog, flowers, autumn leaves, a forest path, moss, cups,
a kite in the sky, architecture). For each photograph, 5 training views come from its left
half and 5 test views from its right half, so no test pixel was seen in training: a square of
50-90% of the half's shorter side at a random place, mirrored at random, resized to 224x224
(Lanczos) and saved as JPEG (quality 85). The random generator is seeded: the set is the same
on every run.

Needs Pillow and numpy. From the repository root:
    bash tools/fetch_photos_4mp.sh            # bench/photos_4mp
    python3 tools/make_scene_set.py bench/photos_4mp
"""
import os
import shutil
import sys

import numpy as np
from PIL import Image, ImageOps

OUT = "tests/data/scenes"
SIDE = 224
VIEWS = 5
SEED = 67


def views(img, half, rng):
    """VIEWS square crops from the left (0) or right (1) half of img."""
    w, h = img.size
    x0, hw = half * (w // 2), w // 2
    short = min(hw, h)
    out = []
    for _ in range(VIEWS):
        s = int(short * rng.uniform(0.5, 0.9))
        x = x0 + int(rng.integers(0, hw - s + 1))
        y = int(rng.integers(0, h - s + 1))
        v = img.crop((x, y, x + s, y + s)).resize((SIDE, SIDE), Image.LANCZOS)
        if rng.random() < 0.5:
            v = ImageOps.mirror(v)
        out.append(v)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/photos_4mp"
    photos = sorted(f for f in os.listdir(src) if f.endswith(".jpg"))
    if len(photos) < 6:
        sys.exit(f"make_scene_set: {len(photos)} photographs in {src}; run tools/fetch_photos_4mp.sh")
    rng = np.random.default_rng(SEED)
    for split in ("train", "test"):
        shutil.rmtree(os.path.join(OUT, split), ignore_errors=True)
    for name in photos:
        cls = os.path.splitext(name)[0]
        img = Image.open(os.path.join(src, name)).convert("RGB")
        for half, split in ((0, "train"), (1, "test")):
            d = os.path.join(OUT, split, cls)
            os.makedirs(d, exist_ok=True)
            for k, v in enumerate(views(img, half, rng)):
                v.save(os.path.join(d, f"{cls}_{k}.jpg"), quality=85)
    shutil.copyfile(os.path.join(src, "PACKAGES.txt"), os.path.join(OUT, "PACKAGES.txt"))
    print(f"{OUT}: {len(photos)} classes, {VIEWS} training and {VIEWS} test views each")


if __name__ == "__main__":
    main()
