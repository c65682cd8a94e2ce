#!/usr/bin/env python3
"""Writes an f16 copy of a crosspool weights file: the network's tensors (`features.*` and
`classifier.*`) as float16, its metadata unchanged, other tensors (HED's side outputs) left
out. Half the size, for carrying to a machine with a size limit (tools/device_pack.sh);
crosspool reads f16 weights as it reads f32 ones.

    python3 tools/weights_to_f16.py weights/vgg16_hed.safetensors out_f16.safetensors
"""
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, dst = sys.argv[1:]
    with safe_open(src, "np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).astype(np.float16) for k in f.keys()
                   if k.startswith(("features.", "classifier."))}
    if not tensors:
        raise SystemExit(f"{src}: no features.* or classifier.* tensors")
    big = [k for k, v in tensors.items() if np.isinf(v).any()]
    if big:
        raise SystemExit(f"{src}: values beyond f16's range in {big}")
    save_file(tensors, dst, metadata=meta)
    print(f"{dst}: {len(tensors)} tensors as f16")


if __name__ == "__main__":
    main()
