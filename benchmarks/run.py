"""Benchmarks: data, training and inference speed of this reproduction, against this machine's peak.

    python benchmarks/run.py                      # CPU, everything (about 30 minutes on 2 cores)
    python benchmarks/run.py --skip quick paper   # without the two end-to-end runs (about 10 minutes)
    python benchmarks/run.py --device cuda        # the same on a GPU, plus the paper sweep's projected time

Every figure is the median of --reps timed repetitions after one warm-up. Beside every training and
inference speed stands fraction_of_peak: the direct convolution's floating-point work at that speed
(forward_gflop, training_gflop: counted from the network's layers) over the matrix-multiply rate measured
at the start of the same run, float32's, or bfloat16's for --amp. A path that does less work (FFT) can pass
1. One table is printed and saved as JSON (benchmarks/results_<device>.json unless --json says otherwise).
Not part of the tests.
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluate_unet import FIGURE_MODELS, N_TEST, N_TEST_PAPER_CPU, TEST_SAMPLES  # noqa: E402
from models.trunks import UNet, fold_for_inference  # noqa: E402
from unet_circles import PAPER_WEIGHT_DECAYS, ModelRun, TrainingState, preset_config, train_step  # noqa: E402
from utils.circles import noisy_pairs, sample_circles  # noqa: E402
from utils.device import cpu_flags, cpu_info, native_bf16  # noqa: E402
from utils.runs import checkpoint_name  # noqa: E402
from utils.weights import save_atomic  # noqa: E402

PAPER = preset_config("paper")  # the paper's sizes and training length, from the trainer's Config block
SIZE = PAPER.size_orig  # 128

SECTIONS = ("data", "train", "scaling", "inference", "quick", "paper")


# What decides float32 and bfloat16 speed: x86's vector and matrix flags, Arm's (Linux and macOS alike)
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve", "bf16")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, reps):
    """Median seconds of fn() over reps runs after one warm-up, and fn's last result."""
    result = fn()
    sync(device)
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times), result


def matmul_peak(device, dtype, reps):
    """GFLOP/s of a 2048 x 2048 matrix product (4096 on a GPU) in dtype."""
    n = 4096 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    seconds, _ = timed(lambda: a @ b, device, reps)
    return 2 * n**3 / seconds / 1e9


def forward_gflop(scaling, size_orig=SIZE, width=PAPER.width, depth=PAPER.depth):
    """GFLOP of one image's forward pass by direct convolution, counted from every convolution's output shape
    (2 per multiply-add; BatchNorm, ReLU, pooling and upsampling, a few operations per pixel, left out)."""
    flops = []

    def count(module, inputs, output):
        c_out, c_in, kh, kw = module.weight.shape
        flops.append(
            2 * c_in * kh * kw * output.shape[1] * output.shape[2] * output.shape[3] * output.shape[0] / len(output)
        )

    model = UNet(scaling, width, depth).eval().to("meta")  # shapes only: no arithmetic is done
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(torch.zeros(1, 1, size_orig * scaling, size_orig * scaling, device="meta"))
    for hook in hooks:
        hook.remove()
    return sum(flops) / 1e9


def training_gflop(scaling, size_orig=SIZE, width=PAPER.width, depth=PAPER.depth):
    """GFLOP of one image's training step by direct convolution: the forward pass and the backward's two
    convolutions of the same size per layer (the input's gradient and the weight's), three forward passes."""
    return 3 * forward_gflop(scaling, size_orig, width, depth)


def fraction(gflop_per_s, peaks, amp):
    """gflop_per_s as a fraction of the matrix-multiply rate measured in the same run (bfloat16's for --amp)."""
    return gflop_per_s / peaks["bfloat16" if amp else "float32"]


def bench_data(device, reps):
    params = torch.from_numpy(sample_circles(32 * (reps + 1), seed=0)).to(device)
    generator = torch.Generator(device).manual_seed(0)
    rows = {}
    for size in (SIZE, 2 * SIZE, 3 * SIZE):
        batches = iter(params.split(32))
        seconds, _ = timed(lambda: noisy_pairs(next(batches), size, generator), device, reps)
        rows[size] = 32 / seconds
    return rows


def trainer(scaling, device, channels_last, amp, compiled=False):
    """A fresh seeded paper-size network, its Adam, and a step(noisy, clean) that runs the trainer's own step."""
    config = dataclasses.replace(PAPER, amp=amp, channels_last=channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    net = UNet(scaling).to(device).to(memory_format=fmt)
    model = torch.compile(net) if compiled else net
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)

    def step(noisy, clean):
        return train_step(config, model, optimizer, noisy.contiguous(memory_format=fmt), clean, device)

    return net, step


def training_modes(device, compile_too):
    """(name, channels_last, amp, compile) of the training variants measured."""
    modes = [("float32 eager", False, False, False), ("float32 channels-last", True, False, False),
             ("--amp (bfloat16 + channels-last)", True, True, False)]
    if compile_too:
        modes.append(("float32 channels-last + compile", True, False, True))
    return modes


def bench_train(device, reps, batch, scaling, peaks, compile_too, short_steps):
    """Training images/s at the paper's size for each mode, and a short identical run's test loss."""
    params = torch.from_numpy(sample_circles(batch * (short_steps + 1) + 64, seed=1)).to(device)
    size = SIZE * scaling
    x, y = noisy_pairs(params[:batch], size, torch.Generator(device).manual_seed(0))
    test_x, test_y = noisy_pairs(params[-64:], size, torch.Generator(device).manual_seed(1))
    gflop = training_gflop(scaling)
    rows = []
    for name, channels_last, amp, compiled in training_modes(device, compile_too):
        if amp and not native_bf16(device):
            rows.append(dict(mode=name, skipped="no native bfloat16 on this device: emulated, far slower than float32"))
            continue
        _, step = trainer(scaling, device, channels_last, amp, compiled)
        seconds, _ = timed(lambda: step(x, y), device, reps)
        # A short identical run from the same initialisation on the same batches, then the test loss.
        net, step = trainer(scaling, device, channels_last, amp, compiled)
        for i in range(short_steps):
            step(*noisy_pairs(params[i * batch : (i + 1) * batch], size, torch.Generator(device).manual_seed(100 + i)))
        net.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.mse_loss(net(test_x).float(), test_y).item()
        rows.append(dict(mode=name, images_per_s=batch / seconds, gflop_per_s=gflop * batch / seconds,
                         fraction_of_peak=fraction(gflop * batch / seconds, peaks, amp), test_loss=loss))
    return rows


def bench_inference(device, reps, peaks):
    """Seconds per image for a batch of 5 at s = 1, 2, 3: float32 eager, the fastest exact path, bfloat16."""
    return [row for s in (1, 2, 3) for row in inference_rows(s, device, reps, peaks)]


def inference_rows(s, device, reps, peaks):
    """bench_inference at one s; its networks are freed on return, before the next s builds larger ones."""
    torch.manual_seed(s)
    model = UNet(s).eval().to(device)
    x = torch.randn(5, 1, SIZE * s, SIZE * s, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fast = fold_for_inference(model).to(memory_format=torch.channels_last)
    gflop = forward_gflop(s)
    rows = []
    with torch.inference_mode():
        eager_s, reference = timed(lambda: model(x), device, reps)
        variants = [("float32 eager", eager_s, reference, False),
                    ("float32 folded + channels-last", *timed(lambda: fast(x_cl), device, reps), False)]
        if device.type == "cpu" and s == 3:  # the only paper network with convolutions fft.TILES takes
            fft = fold_for_inference(model, fft=True).to(memory_format=torch.channels_last)
            variants.append(("float32 folded + channels-last + FFT (evaluator default on the CPU)",
                             *timed(lambda: fft(x_cl), device, reps), False))
        if native_bf16(device):
            def bf16():
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return fast(x_cl)
            variants.append(("bfloat16 folded + channels-last (--amp)", *timed(bf16, device, reps), True))
        else:
            rows.append(dict(scaling=s, mode="bfloat16", skipped="no native bfloat16 on this device"))
    for name, seconds, output, amp in variants:
        deviation = ((output.float() - reference).abs().max() / reference.abs().max()).item()
        rows.append(dict(scaling=s, mode=name, s_per_image=seconds / 5, speedup=eager_s / seconds,
                         gflop_per_s=5 * gflop / seconds, fraction_of_peak=fraction(5 * gflop / seconds, peaks, amp),
                         max_rel_deviation=deviation))
    return rows


def quick_variants(device):
    """(name, Config changes) of the quick network's training paths: direct convolutions (channels-last
    float32), the quick preset's default (FFT), and bfloat16 autocast."""
    variants = [("direct, channels-last float32", dict(fft=False)),
                ("FFT, channels-last float32 (the quick preset's default)", dict(fft=True))]
    if native_bf16(device):
        variants.append(("bfloat16 autocast, channels-last (--amp)", dict(fft=False, amp=True)))
    return variants


def bench_scaling(device, reps, peaks, scalings=(1, 2, 3, 4)):
    """Training images/s of the quick preset's network at each s, every path as the trainer builds and steps
    it (ModelRun, train_step), the paths' steps interleaved so a machine's load falls on all alike; the
    direct convolution's work per image (training_gflop) at that rate as a fraction of the matrix-multiply
    rate (FFT, doing less work, can pass 1); and the cost per image relative to s = 1 beside the s^4 a direct
    convolution's arithmetic grows by."""
    quick = preset_config("quick")
    rows, base = [], {}
    for s in scalings:
        params = torch.from_numpy(sample_circles(quick.batch_size, seed=s))
        noisy, clean = noisy_pairs(params, quick.size_orig * s, torch.Generator().manual_seed(0), quick.sigma_noise)
        noisy = noisy.contiguous(memory_format=torch.channels_last)
        runs = {}
        for name, changes in quick_variants(device):
            run = ModelRun(dataclasses.replace(quick, **changes), s, 0.0, 0, params, device)
            run.build(None, TrainingState())
            runs[name] = run
        times = {name: [] for name in runs}
        for rep in range(reps + 1):  # the first round warms up
            for name, run in runs.items():
                tic = time.perf_counter()
                train_step(run.config, run.step, run.optimizer, noisy.to(device), clean.to(device), device)
                sync(device)
                if rep:
                    times[name].append(time.perf_counter() - tic)
        per_image = {name: statistics.median(seconds) / quick.batch_size for name, seconds in times.items()}
        direct = next(iter(per_image.values()))  # the first path: the direct one
        gflop = training_gflop(s, quick.size_orig, quick.width, quick.depth)
        for name, cost in per_image.items():
            base.setdefault(name, cost)
            rows.append(dict(scaling=s, path=name, images_per_s=1 / cost, speedup=direct / cost,
                             gflop_per_image=gflop, gflop_per_s=gflop / cost,
                             fraction_of_peak=fraction(gflop / cost, peaks, runs[name].config.amp),
                             cost_vs_s1=cost / base[name], s4=s**4))
    return rows


def run_script(args, **kwargs):
    """Seconds a repository script takes, start to finish, as a user runs it."""
    tic = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - tic


def bench_quick(device):
    """The whole quick preset: train every model, then evaluate, in a fresh folder."""
    with tempfile.TemporaryDirectory() as tmp:
        train = run_script(["unet_circles.py", "--preset", "quick", "--device", device.type, "--out-dir", f"{tmp}/w"])
        evaluate = run_script(["evaluate_unet.py", "--preset", "quick", "--device", device.type,
                               "--weights-dir", f"{tmp}/w", "--output-dir", f"{tmp}/out"])
    return dict(train_s=train, evaluate_s=evaluate)


def bench_paper_evaluation(device, amp_ok):
    """evaluate_unet.py start to finish on six random full-size checkpoints, against the authors' way:
    every network reloaded for every sample and run on one image (measured here, in this run)."""
    models = FIGURE_MODELS
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s, reg in models:
            torch.manual_seed(s)
            save_atomic(UNet(s).state_dict(), Path(tmp) / checkpoint_name(SIZE, s, reg, PAPER.epochs))
        command = [
            "evaluate_unet.py",
            "--no-download",
            "--device",
            device.type,
            "--weights-dir",
            tmp,
            "--output-dir",
            f"{tmp}/out",
        ]
        result["float32_s"] = run_script(command)
        result["amp_s"] = run_script(command + ["--amp"]) if amp_ok else None
        # The authors' evaluation: per sample and model, load the checkpoint and run one image.
        authors = 0.0
        for s, reg in models:
            path = Path(tmp) / checkpoint_name(SIZE, s, reg, PAPER.epochs)
            x = torch.randn(1, 1, SIZE * s, SIZE * s, device=device)

            def authors_step():
                model = UNet(s)
                model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
                with torch.no_grad():
                    return model.to(device).eval()(x)

            seconds, _ = timed(authors_step, device, 1)
            authors += 5 * seconds
        result["authors_way_s"] = authors
    # The evaluator also runs every model on the summary's test images, which the authors' script does not:
    # the authors' way on as many images per model is its time scaled by their count.
    images = len(TEST_SAMPLES) + (N_TEST_PAPER_CPU if device.type == "cpu" else N_TEST)
    result["images_per_model"] = images
    result["authors_way_same_images_s"] = authors * images / len(TEST_SAMPLES)
    for name in ("float32_s", "amp_s"):
        if result[name] is not None:
            result[name.replace("_s", "_vs_authors_same_images")] = result[name] / result["authors_way_same_images_s"]
    return result


def projected_paper_sweep(device, reps):
    """Hours for the authors' whole training table (docs/paper.md; epochs x samples per model, the Config block's),
    at its batch size."""
    images = {s: PAPER.epochs * PAPER.samples * len(regs) for s, regs in PAPER_WEIGHT_DECAYS.items()}
    rows = []
    for name, channels_last, amp, _ in training_modes(device, False):
        hours = 0.0
        for s in (1, 2, 3):
            params = torch.from_numpy(sample_circles(PAPER.batch_size, seed=s)).to(device)
            x, y = noisy_pairs(params, SIZE * s, torch.Generator(device).manual_seed(0))
            _, step = trainer(s, device, channels_last, amp)
            seconds, _ = timed(lambda: step(x, y), device, reps)
            hours += images[s] / (PAPER.batch_size / seconds) / 3600
        rows.append(dict(mode=name, hours=hours))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to measure (default: cpu)")
    parser.add_argument(
        "--reps", type=int, default=3, help="timed repetitions per figure after one warm-up (default: 3)"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    parser.add_argument(
        "--compile", action="store_true", help="also measure torch.compile in training (slow to compile)"
    )
    parser.add_argument(
        "--short-steps", type=int, help="steps of the short identical training run (default: 4 on cpu, 50 on cuda)"
    )
    parser.add_argument("--json", help="where to save the results (default: benchmarks/results_<device>.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "run.py: error: --device cuda asked for, but CUDA is not available here\n")
    cpu = cpu_info("model name") or platform.processor() or platform.machine()
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu
    present = cpu_flags()
    flags = " ".join(flag for flag in SPEED_FLAGS if flag in present) or "unknown"
    header = dict(device=f"{device.type} ({name})", cpu_flags=flags,
                  threads=torch.get_num_threads(), cpus=os.cpu_count(), torch=torch.__version__,
                  native_bf16=native_bf16(device), reps=args.reps)
    print(" | ".join(f"{k} {v}" for k, v in header.items()), flush=True)
    results = dict(header=header)
    peaks = {"float32": matmul_peak(device, torch.float32, args.reps),
             "bfloat16": matmul_peak(device, torch.bfloat16, 1 if not native_bf16(device) else args.reps)}
    results["matmul_peak_gflop_per_s"] = peaks
    print(
        f"matrix-multiply peak: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.1f} GFLOP/s",
        flush=True,
    )

    if "data" not in args.skip:
        results["data_pairs_per_s"] = bench_data(device, args.reps)
        print("data (noisy/clean pairs per s, batch 32): " +
              ", ".join(f"{n} px {v:,.0f}" for n, v in results["data_pairs_per_s"].items()), flush=True)
    if "train" not in args.skip:
        batch = 8 if device.type == "cpu" else 32
        short_steps = args.short_steps or (4 if device.type == "cpu" else 50)
        results["train_s1"] = bench_train(device, args.reps, batch, 1, peaks, args.compile, short_steps)
        print(f"training, paper size, s = 1, batch {batch}:", flush=True)
        for row in results["train_s1"]:
            print("  " + _fmt(row), flush=True)
        if device.type == "cuda":
            results["paper_sweep_hours"] = projected_paper_sweep(device, args.reps)
            for row in results["paper_sweep_hours"]:
                print("  projected paper sweep: " + _fmt(row), flush=True)
    if "scaling" not in args.skip:
        results["quick_training_scaling"] = bench_scaling(device, args.reps, peaks)
        print("training the quick preset's network, batch 32, images/s by s and path "
              "(fraction_of_peak: the direct convolution's work at that rate over the matrix-multiply rate):",
              flush=True)
        for row in results["quick_training_scaling"]:
            print("  " + _fmt(row), flush=True)
    if "inference" not in args.skip:
        results["inference"] = bench_inference(device, args.reps, peaks)
        print("inference, paper size, batch 5:", flush=True)
        for row in results["inference"]:
            print("  " + _fmt(row), flush=True)
    if "quick" not in args.skip:
        results["quick_preset"] = bench_quick(device)
        print("quick preset: " + _fmt(results["quick_preset"]), flush=True)
    if "paper" not in args.skip:
        results["paper_evaluation"] = bench_paper_evaluation(device, native_bf16(device))
        print("paper evaluation (six fake full-size checkpoints): " + _fmt(results["paper_evaluation"]), flush=True)
    path = Path(args.json or ROOT / "benchmarks" / f"results_{device.type}.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {path}")


def _fmt(row):
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


if __name__ == "__main__":
    main()
