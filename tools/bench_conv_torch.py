#!/usr/bin/env python3
"""PyTorch counterpart of benches/conv.rs: the same VGG16 3x3 convolutions (+ReLU), same batch.

Reports milliseconds and GFLOP/s per layer for fp32 with TF32 off (the same arithmetic as
crosspool's fp32 kernel) and with TF32 on (PyTorch's default for cuDNN convolutions).
Usage: python3 tools/bench_conv_torch.py [--input 224] [--batch 8] [--device cuda]
"""
import argparse
import json

import torch

LAYERS = [("conv1_2", 64, 64, 1), ("conv2_2", 128, 128, 2), ("conv3_2", 256, 256, 4),
          ("conv4_2", 512, 512, 8), ("conv5_2", 512, 512, 16)]


def time_ms(fn, device, reps=50):
    for _ in range(5):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(reps):
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        import time
        times = []
        for _ in range(max(3, reps // 10)):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = args.device
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    rows = []
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for layer, cin, cout, div in LAYERS:
            hw = max(1, args.input // div)
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1).to(dev)
            x = torch.randn(args.batch, cin, hw, hw, device=dev)
            with torch.no_grad():
                ms = time_ms(lambda: torch.relu_(conv(x)), dev)
            flops = 2.0 * args.batch * hw * hw * cout * cin * 9
            rows.append(dict(device=name, layer=layer, hw=hw, batch=args.batch, tf32=tf32,
                             ms=ms, gflops=flops / ms / 1e6))
    for r in rows:
        print(f"{r['device']:<24} {r['layer']:<8} {r['hw']:>4}x{r['hw']:<4} batch {r['batch']:<3} "
              f"tf32={str(r['tf32']):<5} {r['ms']:8.3f} ms {r['gflops']:10.1f} GFLOP/s")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
