"""Training speed of the quick preset's small U-nets on a CPU: the direct convolution against the
FFT one (models/trunks/fft_train.py), and optionally bfloat16 autocast and torch.compile.

One training step is what the trainer does: forward, mean squared error, backward, Adam. Every
variant trains its own copy of one seeded network on the same batches; the variants' steps are
interleaved (A, B, A, B, ...) so that the load of a shared machine falls on all alike, and each
figure is a median. The deviation columns compare one step's output and parameter gradients with
the direct float32 network's: max |a - b| / max |b|, the worst tensor.

    python benchmarks/train_speed.py                                  # s = 2, 3; widths 8, 16 (about 5 min)
    python benchmarks/train_speed.py --scalings 1 2 3 --variants direct-cl fft bf16-cl bf16-fft
    python benchmarks/train_speed.py --threads 1 --clock cpu          # process CPU time, 1 thread

Variants: direct-cl (the baseline: channels-last, float32), direct, fft, fft-cl (FFT convolutions,
NCHW or channels-last), bf16-cl, bf16-fft (bfloat16 autocast: the FFT layers fall back to direct
convolutions under autocast), compile-cl, compile-fft (torch.compile of the model; the compile
time is printed apart). Not part of the tests.
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.trunks import UNet  # noqa: E402
from models.trunks.fft_train import fft_for_training  # noqa: E402

VARIANTS = ("direct-cl", "direct", "fft", "fft-cl", "bf16-cl", "bf16-fft", "compile-cl", "compile-fft")


def build(variant, base):
    """(model, optimizer, step) for one variant, from a deep copy of the seeded network `base`."""
    model = copy.deepcopy(base)
    if "fft" in variant:
        fft_for_training(model)
    channels_last = variant.endswith("-cl")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = torch.compile(model) if variant.startswith("compile") else model
    amp = variant.startswith("bf16")

    def step(noisy, clean):
        if channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            prediction = net(noisy)
        loss = F.mse_loss(prediction.float(), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return prediction

    return model, optimizer, step


def deviation(variant, base, noisy, clean):
    """Max relative deviation of one step's output and parameter gradients from direct-cl float32's."""
    results = []
    for name in ("direct-cl", variant):
        model, _, _ = build(name, base)
        net = model
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name.startswith("bf16")):
            prediction = net(noisy.contiguous(memory_format=torch.channels_last) if name.endswith("-cl") else noisy)
        F.mse_loss(prediction.float(), clean).backward()
        results.append([prediction.detach().float()] + [p.grad for p in model.parameters()])
    worst_out = ((results[1][0] - results[0][0]).abs().max() / results[0][0].abs().max()).item()
    worst_grad = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(results[1][1:], results[0][1:]))
    return worst_out, worst_grad


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalings", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--variants", nargs="+", default=["direct-cl", "direct", "fft"], choices=VARIANTS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size-orig", type=int, default=32, help="base image size; images are size_orig * s px")
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--steps", type=int, default=7, help="timed steps per variant (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.variants[0] != "direct-cl":
        args.variants.insert(0, "direct-cl")  # the speed-ups are against it
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, depth {args.depth}, "
          f"{args.clock} clock, median of {args.steps} interleaved steps")
    print(f"{'s':>2} {'width':>5} {'variant':>12} {'img/s':>8} {'speed-up':>8} {'out dev':>8} {'grad dev':>8}")
    for scaling in args.scalings:
        for width in args.widths:
            size = args.size_orig * scaling
            torch.manual_seed(0)
            base = UNet(scaling=scaling, width=width, depth=args.depth)
            batches = [(torch.randn(args.batch, 1, size, size), torch.randn(args.batch, 1, size, size))
                       for _ in range(2)]
            steps, compile_times = {}, {}
            for variant in args.variants:
                _, _, step = build(variant, base)
                tic = time.perf_counter()
                step(*batches[0])  # warm-up (and compilation)
                compile_times[variant] = time.perf_counter() - tic
                step(*batches[1])
                steps[variant] = step
            times = {variant: [] for variant in args.variants}
            for i in range(args.steps):
                for variant, step in steps.items():
                    tic = clock()
                    step(*batches[i % 2])
                    times[variant].append(clock() - tic)
            baseline = statistics.median(times["direct-cl"])
            for variant in args.variants:
                median = statistics.median(times[variant])
                out_dev, grad_dev = deviation(variant, base, *batches[0]) if variant != "direct-cl" else (0.0, 0.0)
                if variant.startswith("compile"):
                    out_dev, grad_dev = float("nan"), float("nan")
                note = f"  (first step {compile_times[variant]:.0f} s)" if variant.startswith("compile") else ""
                print(f"{scaling:>2} {width:>5} {variant:>12} {args.batch / median:8.1f} {baseline / median:7.2f}x "
                      f"{out_dev:8.1e} {grad_dev:8.1e}{note}", flush=True)


if __name__ == "__main__":
    main()
