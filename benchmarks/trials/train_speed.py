"""Training speed of the quick preset's small U-nets on a CPU: the direct convolution against the
FFT one (models/trunks/fft.py), and optionally bfloat16 autocast and torch.compile.

One training step is what the trainer does: forward, mean squared error, backward, Adam. Every
variant trains its own copy of one seeded network on the same batches; the variants' steps are
interleaved (A, B, A, B, ...) so that the load of a shared machine falls on all alike, and each
figure is a median. The deviation columns compare one step's output and parameter gradients (on
the first --deviation-batch images) with the direct network's in float64: max |a - b| / max |b|,
the worst tensor (direct-cl's own row shows what float32 rounding alone gives).

    python benchmarks/trials/train_speed.py                                  # s = 2, 3; widths 8, 16 (about 5 min)
    python benchmarks/trials/train_speed.py --scalings 1 2 3 --variants fft bf16-cl bf16-fft compile-cl
    python benchmarks/trials/train_speed.py --threads 1 --clock cpu          # process CPU time, 1 thread
    OMP_WAIT_POLICY=PASSIVE python benchmarks/trials/train_speed.py --clock busiest-thread

Clocks: wall (elapsed; what an unloaded machine shows, but on a loaded one the variants with many
short parallel regions lose most), cpu (this process's CPU time; steady with --threads 1), and
busiest-thread (the CPU time of the busiest of the process's threads, from /proc on Linux: with
OMP_WAIT_POLICY=PASSIVE, so that waiting threads sleep instead of spinning, an estimate of the
elapsed time on an unloaded machine that a loaded one disturbs little).

Variants: direct-cl (the baseline: channels-last, float32), direct (NCHW), fft (FFT convolutions,
models.trunks.fft.fft_for_training, channels-last), fft-nchw, bf16-cl, bf16-fft (bfloat16
autocast; the FFT layers fall back to direct convolutions under autocast), compile-cl, compile-fft
(torch.compile of the model; its first two steps, with the compilations, are printed apart). Not
part of the tests.
"""

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.trunks import UNet  # noqa: E402
from models.trunks.fft import fft_for_training, reuse_freed_memory  # noqa: E402

VARIANTS = ("direct-cl", "direct", "fft", "fft-nchw", "bf16-cl", "bf16-fft", "compile-cl", "compile-fft")


def build(variant, base):
    """(model, gradients, step) for one variant, from a deep copy of the seeded network `base`:
    gradients(noisy, clean) runs forward and backward without an optimizer step (for the deviations)."""
    model = copy.deepcopy(base)
    if "fft" in variant:
        fft_for_training(model)
    channels_last = variant.endswith("-cl") or variant in ("fft", "bf16-fft", "compile-fft")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = torch.compile(model) if variant.startswith("compile") else model
    amp = variant.startswith("bf16")

    def gradients(noisy, clean):
        if channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            prediction = net(noisy)
        loss = F.mse_loss(prediction.float(), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return prediction

    def step(noisy, clean):
        gradients(noisy, clean)
        optimizer.step()

    return model, gradients, step


def reference(base, noisy, clean):
    """Output and parameter gradients of the direct network in float64."""
    model = copy.deepcopy(base).double()
    prediction = model(noisy.double())
    F.mse_loss(prediction, clean.double()).backward()
    return prediction.detach(), {name: p.grad for name, p in model.named_parameters()}


def deviation(model, prediction, exact):
    """Max relative deviation max |a - b| / max |b| of the output and of the worst parameter gradient
    from float64's. The biases of the convolutions before a training-mode BatchNorm are left out:
    their exact gradient is 0, so their relative deviation is rounding over rounding."""
    exact_prediction, exact_grads = exact
    out_dev = ((prediction.detach().double() - exact_prediction).abs().max() / exact_prediction.abs().max()).item()
    grad_dev = max(((p.grad.double() - exact_grads[name]).abs().max() / exact_grads[name].abs().max()).item()
                   for name, p in model.named_parameters()
                   if not name.endswith((".double_conv.0.bias", ".double_conv.4.bias")))
    return out_dev, grad_dev


def thread_seconds():
    """CPU seconds of each of this process's threads (Linux /proc schedstat, nanoseconds)."""
    seconds = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                seconds[tid] = int(f.read().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return seconds


def timed(step, clock):
    """Seconds of one step by `clock` (see the module's docstring)."""
    if clock == "busiest-thread":
        before = thread_seconds()
        step()
        after = thread_seconds()
        return max(after[tid] - before.get(tid, 0.0) for tid in after)
    tic = time.perf_counter() if clock == "wall" else time.process_time()
    step()
    return (time.perf_counter() if clock == "wall" else time.process_time()) - tic


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalings", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--variants", nargs="+", default=["direct-cl", "fft"], choices=VARIANTS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size-orig", type=int, default=32, help="base image size; images are size_orig * s px")
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--steps", type=int, default=7, help="timed steps per variant (after 2 warm-up steps)")
    parser.add_argument("--deviation-batch", type=int, default=8, help="images in the deviation check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu", "busiest-thread"), default="wall")
    parser.add_argument("--plain-malloc", action="store_true",
                        help="leave glibc's malloc as it is (default: reuse_freed_memory(), for every variant)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    malloc = "plain malloc" if args.plain_malloc else f"reuse_freed_memory() {reuse_freed_memory()}"
    if args.variants[0] != "direct-cl":
        args.variants.insert(0, "direct-cl")  # the speed-ups are against it
    waiting = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"torch {torch.__version__}, {args.threads} threads (OMP_WAIT_POLICY {waiting}), batch {args.batch}, "
          f"depth {args.depth}, {args.clock} clock, median of {args.steps} interleaved steps, {malloc}")
    print(f"{'s':>2} {'width':>5} {'variant':>12} {'img/s':>8} {'speed-up':>8} {'out dev':>8} {'grad dev':>8}")
    for scaling in args.scalings:
        for width in args.widths:
            size = args.size_orig * scaling
            torch.manual_seed(0)
            base = UNet(scaling=scaling, width=width, depth=args.depth)
            batches = [(torch.randn(args.batch, 1, size, size), torch.randn(args.batch, 1, size, size))
                       for _ in range(2)]
            few = [t[: args.deviation_batch] for t in batches[0]]  # float64's direct convolution is memory-hungry
            exact = reference(base, *few)
            steps, first_step, deviations = {}, {}, {}
            for variant in args.variants:
                model, gradients, step = build(variant, base)
                tic = time.perf_counter()
                deviations[variant] = deviation(model, gradients(*few), exact)
                step(*batches[1])  # warm-up (and compilation, for both batch sizes)
                first_step[variant] = time.perf_counter() - tic
                steps[variant] = step
            times = {variant: [] for variant in args.variants}
            for i in range(args.steps):
                for variant, step in steps.items():
                    times[variant].append(timed(lambda: step(*batches[i % 2]), args.clock))
            baseline = statistics.median(times["direct-cl"])
            for variant in args.variants:
                median = statistics.median(times[variant])
                note = f"  (first two steps {first_step[variant]:.0f} s)" if variant.startswith("compile") else ""
                print(f"{scaling:>2} {width:>5} {variant:>12} {args.batch / median:8.1f} {baseline / median:7.2f}x "
                      f"{deviations[variant][0]:8.1e} {deviations[variant][1]:8.1e}{note}", flush=True)


if __name__ == "__main__":
    main()
