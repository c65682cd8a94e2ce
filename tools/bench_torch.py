#!/usr/bin/env python3
"""The crosspool pipeline in PyTorch, for comparison with `crosspool bench`.

torchvision's VGG16/VGG19/AlexNet trunk up to the paper's layer pair (random weights: timing
does not depend on them), cross-layer pooling as a batched matrix product P = A X^T, per-channel
L2 and signed square root; the same input size and batch, on CUDA if present, else the CPU.
Times a whole batch as `crosspool bench` does: upload, compute, download, median of --iters.
Reports PyTorch's default (cuDNN convolutions in TF32 on Ampere and later) and strict fp32.

    python3 tools/bench_torch.py --model vgg16 --size 224 --batch 8 --json
"""
import argparse
import json
import time

import torch
import torchvision

# Index in `features` just after the ReLU of layer t and of layer t+1.
PAIRS = {"vgg16": (28, 30), "vgg19": (34, 36), "alexnet": (10, 12)}


def run(model, size, batch, iters, warmup, device, tf32):
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    net = getattr(torchvision.models, model)(weights=None).features.eval().to(device)
    t_end, t1_end = PAIRS[model]
    head, tail = net[:t_end], net[t_end:t1_end]
    x_host = torch.randn(batch, 3, size, size).pin_memory() if device == "cuda" else torch.randn(batch, 3, size, size)

    def step():
        x = x_host.to(device, non_blocking=True)
        with torch.no_grad():
            xt = head(x)                      # layer t after ReLU   [n, Dt, h, w]
            a = tail(xt)                      # layer t+1 after ReLU [n, Dt1, h, w]
            n, dt, h, w = xt.shape
            p = torch.bmm(a.reshape(n, -1, h * w), xt.reshape(n, dt, h * w).transpose(1, 2))
            p = torch.nn.functional.normalize(p, dim=2)
            p = torch.sign(p) * torch.sqrt(torch.abs(p))
        return p.cpu()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    t = times[len(times) // 2]
    return {"tf32": tf32, "images_per_second": batch / t, "ms_per_batch": t * 1e3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vgg16", choices=sorted(PAIRS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    modes = [True, False] if args.device == "cuda" else [False]
    results = [run(args.model, args.size, args.batch, args.iters, args.warmup, args.device, m) for m in modes]
    out = {"device": name, "torch": torch.__version__, "model": args.model, "size": args.size,
           "batch": args.batch, "results": results}
    if args.json:
        print(json.dumps(out))
    else:
        for r in results:
            print(f"{name}: {args.model} {args.size}x{args.size} batch {args.batch} "
                  f"{'TF32' if r['tf32'] else 'fp32'}: {r['images_per_second']:.1f} images/s "
                  f"({r['ms_per_batch']:.2f} ms/batch)")


if __name__ == "__main__":
    main()
