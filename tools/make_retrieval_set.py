#!/usr/bin/env python3
"""Writes tests/data/retrieval/: a small real retrieval set in the style of INRIA Holidays.

Every image derives from a photograph that scikit-image ships in its PyPI wheel
(`skimage/data/`). Each group is one scene: the original (the query) and three synthetic
transformations of it (an off-centre crop, a rotation, and a darker, lower-contrast,
heavily compressed copy); the motorcycle group also holds the real second view of its stereo
pair. Texture photographs with no group act as distractors. Ground truth goes to
groundtruth.jsonl, one query a line: {"query": ..., "relevant": [...], "junk": []}.

Needs Pillow. From the repository root:
    pip download scikit-image==0.26.0 --no-deps -d /tmp/skw
    unzip -o /tmp/skw/scikit_image-*.whl 'skimage/data/*' -d /tmp/skdata
    python3 tools/make_retrieval_set.py /tmp/skdata/skimage/data
"""
import io
import json
import os
import sys

from PIL import Image, ImageEnhance

OUT = "tests/data/retrieval"
GROUPS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
          "hubble_deep_field.jpg", "motorcycle_left.png", "rocket.jpg"]
DISTRACTORS = ["brick.png", "grass.png", "gravel.png", "text.png"]
LONG_SIDE = 256


def load(src, name):
    img = Image.open(os.path.join(src, name)).convert("RGB")
    scale = LONG_SIDE / max(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)


def save(img, name):
    img.save(os.path.join(OUT, name), quality=90)
    return name


def crop(img):
    # 75% of each side, off centre towards the bottom right.
    w, h = img.size
    cw, ch = int(w * 0.75), int(h * 0.75)
    return img.crop((w - cw - w // 40, h - ch - h // 40, w - w // 40, h - h // 40))


def rotate(img):
    # 10 degrees, then the largest centred crop free of the black corners.
    r = img.rotate(10, resample=Image.BICUBIC)
    w, h = r.size
    return r.crop((w // 8, h // 8, w - w // 8, h - h // 8))


def degrade(img):
    img = ImageEnhance.Brightness(img).enhance(0.7)
    img = ImageEnhance.Contrast(img).enhance(0.7)
    img = img.resize((img.width * 2 // 3, img.height * 2 // 3), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=25)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/tmp/skdata/skimage/data"
    os.makedirs(OUT, exist_ok=True)
    truth = []
    for name in GROUPS:
        stem = os.path.splitext(name)[0]
        img = load(src, name)
        query = save(img, f"{stem}.jpg")
        relevant = [save(f(img), f"{stem}_{f.__name__}.jpg") for f in (crop, rotate, degrade)]
        if stem == "motorcycle_left":
            relevant.append(save(load(src, "motorcycle_right.png"), "motorcycle_right.jpg"))
        truth.append({"query": query, "relevant": relevant, "junk": []})
    for name in DISTRACTORS:
        save(load(src, name), os.path.splitext(name)[0] + ".jpg")
    with open(os.path.join(OUT, "groundtruth.jsonl"), "w") as f:
        for t in truth:
            f.write(json.dumps(t) + "\n")


if __name__ == "__main__":
    main()
