#!/usr/bin/env python3
"""PyTorch's side of tools/gemm_candidates: torch.mm on VGG16's im2col shapes at 224, and the
whole VGG16 trunk (to conv5_3) at batch 1 and 8, on --threads CPU threads. JSON lines out."""
import argparse
import json
import time

import torch
import torchvision

SHAPES = [("conv1_2", 224 * 224, 64, 9 * 64), ("conv2_2", 112 * 112, 128, 9 * 128),
          ("conv3_2", 56 * 56, 256, 9 * 256), ("conv4_2", 28 * 28, 512, 9 * 512),
          ("conv5_2", 14 * 14, 512, 9 * 512)]
TRUNK_GFLOP = 30.7  # VGG16 conv1_1..conv5_3 at 224x224, 2 FLOP per multiply-add


def best(f, runs=5):
    f()
    t = []
    for _ in range(runs):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return min(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for name, m, n, k in SHAPES:
        x, w = torch.rand(m, k), torch.rand(k, n)
        s = best(lambda: torch.mm(x, w))
        print(json.dumps({"layer": name, "m": m, "n": n, "k": k, "threads": a.threads,
                          "torch_mm": round(2 * m * n * k / s / 1e9, 1)}))
    trunk = torchvision.models.vgg16().features[:30].eval()
    with torch.no_grad():
        for batch in (1, 8):
            x = torch.rand(batch, 3, 224, 224)
            s = best(lambda: trunk(x), runs=3)
            print(json.dumps({"vgg16_trunk_batch": batch, "threads": a.threads,
                              "images_per_second": round(batch / s, 2),
                              "effective_gflops": round(TRUNK_GFLOP * batch / s, 1),
                              "torch": torch.__version__}))


if __name__ == "__main__":
    main()
