#!/usr/bin/env python3
"""Writes tests/data/odd/: small images in the formats and states that break naive loaders.

Every file derives from tests/data/photos/chelsea.jpg (CC0, see its PROVENANCE.md) or is
synthetic. Needs Pillow. Run from the repository root: python3 tools/make_odd_images.py
"""
import io
import os
import struct

from PIL import Image

OUT = "tests/data/odd"
os.makedirs(OUT, exist_ok=True)
base = Image.open("tests/data/photos/chelsea.jpg").convert("RGB").resize((48, 32))

base.convert("L").save(f"{OUT}/grayscale.png")
rgba = base.convert("RGBA")
rgba.putalpha(128)
rgba.save(f"{OUT}/alpha.png")
base.convert("CMYK").save(f"{OUT}/cmyk.jpg", quality=90)
# 16-bit grey: the 8-bit values scaled to the full 16-bit range (v * 257).
grey = base.convert("L")
g16 = Image.new("I;16", grey.size)
g16.putdata([v * 257 for v in grey.getdata()])
g16.save(f"{OUT}/gray16.png")
base.save(f"{OUT}/palette.gif")

# EXIF orientation 6 (display rotated 90 degrees clockwise): stored 48x32 with a red left half
# and a blue right half, so upright it is 32x48 with red on top.
two = Image.new("RGB", (48, 32), (0, 0, 255))
two.paste((255, 0, 0), (0, 0, 24, 32))
exif = Image.Exif()
exif[0x0112] = 6
two.save(f"{OUT}/exif_rotated.jpg", quality=95, exif=exif.tobytes())

buf = io.BytesIO()
base.save(buf, format="JPEG", quality=90)
data = buf.getvalue()
open(f"{OUT}/truncated.jpg", "wb").write(data[: len(data) // 3])
open(f"{OUT}/empty.jpg", "wb").write(b"")
open(f"{OUT}/not_an_image.png", "wb").write(b"crosspool test file: text, not a PNG\n" * 4)
open(f"{OUT}/corrupt.jpg", "wb").write(data[:20] + bytes((i * 37) % 256 for i in range(2000)))

# A BMP header claiming 100000 x 100000 pixels (30 GB decoded) with almost no data.
w = h = 100000
header = struct.pack("<2sIHHI", b"BM", 54 + 64, 0, 0, 54)
dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 64, 2835, 2835, 0, 0)
open(f"{OUT}/bomb.bmp", "wb").write(header + dib + bytes(64))
# A progressive JPEG (several scans), which tests cut at many points: a cut after a complete
# scan decodes to a blurry image without error unless the missing end is noticed.
base.resize((96, 64)).save(f"{OUT}/progressive.jpg", quality=90, progressive=True)

print(sorted(os.listdir(OUT)))
