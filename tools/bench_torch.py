#!/usr/bin/env python3
"""The crosspool pipeline in PyTorch, for comparison with `crosspool bench`.

torchvision's VGG16/VGG19/AlexNet trunk up to the paper's layer pair, or ResNet-50/101 up to
layer4.1 and layer4.2 (crosspool's default pair for them; batch norm folded into the
convolutions with torch.nn.utils.fusion, as crosspool folds it) (random weights: timing does
not depend on them), cross-layer pooling as a batched matrix product P = A X^T, per-channel
L2 and signed square root; the same input size and batch, on CUDA if present, else the CPU.
Times a whole batch as `crosspool bench` does: upload, compute, download, median of --iters.
On CUDA, set up as a performance-minded user would (torch.backends.cudnn.benchmark on,
channels_last, pinned host memory, non-blocking copies): strict fp32, PyTorch's default
(cuDNN convolutions in TF32 on Ampere and later) and fp16 autocast.
With --compile on CUDA, TF32 and fp16 autocast under torch.compile too.
On the CPU (`--threads N` as `torch.set_num_threads`): the default NCHW layout, channels_last
(oneDNN's fastest layout, what a performance-minded user picks) and, with --compile,
channels_last under torch.compile; with --bf16, channels_last under bf16 autocast (oneDNN's
AMX kernels where the CPU has them), compiled too with --compile.

    python3 tools/bench_torch.py --model vgg16 --size 224 --batch 8 --json
    python3 tools/bench_torch.py --device cpu --threads 2 --compile --batch 1 --json
"""
import argparse
import json
import time

import torch
import torchvision

# Index in `features` just after the ReLU of layer t and of layer t+1.
PAIRS = {"vgg16": (28, 30), "vgg19": (34, 36), "alexnet": (10, 12)}
RESNETS = ("resnet50", "resnet101")


def fold_batch_norms(m):
    """ResNet with every batch norm folded into the convolution before it (eval mode): what a
    performance-minded user does for inference, and what crosspool does on load."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    m.conv1 = fuse_conv_bn_eval(m.conv1, m.bn1)
    m.bn1 = torch.nn.Identity()
    for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
        for block in stage:
            for i in (1, 2, 3):
                setattr(block, f"conv{i}", fuse_conv_bn_eval(getattr(block, f"conv{i}"), getattr(block, f"bn{i}")))
                setattr(block, f"bn{i}", torch.nn.Identity())
            if block.downsample is not None:
                block.downsample = torch.nn.Sequential(fuse_conv_bn_eval(block.downsample[0], block.downsample[1]))
    return m


def head_and_tail(model):
    """The network up to layer t (after its ReLU), and from there to layer t+1."""
    if model in RESNETS:
        m = fold_batch_norms(getattr(torchvision.models, model)(weights=None).eval())
        head = torch.nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3,
                                   m.layer4[:2])
        return head, m.layer4[2:]
    net = getattr(torchvision.models, model)(weights=None).features.eval()
    t_end, t1_end = PAIRS[model]
    return net[:t_end], net[t_end:t1_end]


def run(model, size, batch, iters, warmup, device, tf32, channels_last=False, compiled=False,
        fp16=False, bf16=False):
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    # cuDNN times its algorithms on the first batch of each shape and keeps the fastest.
    torch.backends.cudnn.benchmark = device == "cuda"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    head, tail = (n.to(device).to(memory_format=fmt) for n in head_and_tail(model))
    x_host = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    if device == "cuda":
        x_host = x_host.pin_memory()

    def features(x):
        xt = head(x)                      # layer t after ReLU   [n, Dt, h, w]
        a = tail(xt)                      # layer t+1 after ReLU [n, Dt1, h, w]
        n, dt, h, w = xt.shape
        p = torch.bmm(a.reshape(n, -1, h * w), xt.reshape(n, dt, h * w).transpose(1, 2))
        p = torch.nn.functional.normalize(p, dim=2)
        return torch.sign(p) * torch.sqrt(torch.abs(p))

    compute = torch.compile(features) if compiled else features

    def step():
        x = x_host.to(device, non_blocking=True)
        half = torch.bfloat16 if bf16 else torch.float16
        with torch.no_grad(), torch.autocast(device, dtype=half, enabled=fp16 or bf16):
            p = compute(x)
        return p.float().cpu()

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
    return {"tf32": tf32, "channels_last": channels_last, "compiled": compiled, "fp16": fp16,
            "bf16": bf16,
            "cudnn_benchmark": device == "cuda", "images_per_second": batch / t,
            "ms_per_batch": t * 1e3}


def label(r):
    """A result's setting in words."""
    if r.get("fp16"):
        parts = ["fp16 autocast"]
    elif r.get("bf16"):
        parts = ["bf16 autocast"]
    else:
        parts = ["TF32 (default)" if r["tf32"] else "fp32"]
    if r.get("channels_last"):
        parts.append("channels_last")
    if r.get("compiled"):
        parts.append("torch.compile")
    return ", ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vgg16", choices=sorted(PAIRS) + list(RESNETS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile (CPU: channels_last; CUDA: TF32 and fp16 autocast)")
    ap.add_argument("--bf16", action="store_true",
                    help="CPU: also time bf16 autocast (channels_last; compiled too with --compile)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common = (args.model, args.size, args.batch, args.iters, args.warmup, args.device)
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
        results = [run(*common, False, channels_last=True),
                   run(*common, True, channels_last=True),
                   run(*common, True, channels_last=True, fp16=True)]
        if args.compile:
            # PyTorch's fastest settings, compiled (the first batches pay for compiling).
            results += [run(*common, True, channels_last=True, compiled=True),
                        run(*common, True, channels_last=True, fp16=True, compiled=True)]
    else:
        name = f"cpu, {torch.get_num_threads()} threads"
        results = [run(*common, False), run(*common, False, channels_last=True)]
        if args.compile:
            results.append(run(*common, False, channels_last=True, compiled=True))
        if args.bf16:
            results.append(run(*common, False, channels_last=True, bf16=True))
            if args.compile:
                results.append(run(*common, False, channels_last=True, bf16=True, compiled=True))
    out = {"device": name, "torch": torch.__version__, "model": args.model, "size": args.size,
           "batch": args.batch, "results": results}
    if args.json:
        print(json.dumps(out))
    else:
        for r in results:
            print(f"{name}: {args.model} {args.size}x{args.size} batch {args.batch} {label(r)}: "
                  f"{r['images_per_second']:.1f} images/s ({r['ms_per_batch']:.2f} ms/batch)")


if __name__ == "__main__":
    main()
