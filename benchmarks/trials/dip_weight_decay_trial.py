"""Where the PSNR drops of the deep image prior's reg > 0 fits come from: the quick preset's network at s = 1,
fitted with variants of the optimiser, recording per iteration the PSNR of the averaged output (what the
results report) and of the raw iterate, the loss, and the squared norms of the weights.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/trials/dip_weight_decay_trial.py \
        [--iterations 1200] [--variants NAME ...] [--curves OUT.npz]
    python benchmarks/trials/dip_weight_decay_trial.py --describe OUT.npz   # the lines again, from saved curves

One line per variant; the runs behind deep_image_prior.py's choice of lr are in dip_weight_decay.txt.
The weight decay reaches all parameters (Adam, reg / s^2, as in deep_image_prior.py) unless the variant says:
  bn-free:  no decay on the convolutions that feed a BatchNorm (their scale does not change the output)
  bn-only:  decay only on those convolutions
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from deep_image_prior import PRESETS, Config, base_input, blocks, images, perturbation, psnr_of  # noqa: E402
from models.trunks import UNet  # noqa: E402
from utils.seeds import seed_of  # noqa: E402

# name: (reg, lr, warm-up iterations, which parameters get the decay, further arguments of Adam)
VARIANTS = {
    "reg0": (0.0, 0.01, 0, "all", {}),
    "reg1e-3": (1e-3, 0.01, 0, "all", {}),
    "reg1e-3 bn-free": (1e-3, 0.01, 0, "bn-free", {}),
    "reg1e-3 bn-only": (1e-3, 0.01, 0, "bn-only", {}),
    "reg1e-3 warm-up 200": (1e-3, 0.01, 200, "all", {}),
    "reg1e-3 lr 0.003": (1e-3, 0.003, 0, "all", {}),
    "reg0 lr 0.003": (0.0, 0.003, 0, "all", {}),
    "reg1e-3 amsgrad": (1e-3, 0.01, 0, "all", dict(amsgrad=True)),
    "reg0 amsgrad": (0.0, 0.01, 0, "all", dict(amsgrad=True)),
    "reg1e-3 beta2 0.99": (1e-3, 0.01, 0, "all", dict(betas=(0.9, 0.99))),
    "reg1e-3 lr 0.001": (1e-3, 0.001, 0, "all", {}),
    "reg0 lr 0.001": (0.0, 0.001, 0, "all", {}),
    "reg1e-2 lr 0.001": (1e-2, 0.001, 0, "all", {}),
    "reg1e-2": (1e-2, 0.01, 0, "all", {}),
    "reg1e-2 amsgrad": (1e-2, 0.01, 0, "all", dict(amsgrad=True)),
}


def fed_to_batchnorm(net):
    """The weights of the convolutions followed (after /s^2) by a BatchNorm: the output ignores their scale."""
    fed = set()
    for module in net.modules():
        layers = list(module.children()) if isinstance(module, nn.Sequential) else []
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Conv2d) and any(isinstance(x, nn.BatchNorm2d) for x in layers[i + 1 : i + 3]):
                fed.add(layer.weight)
    return fed


def fastest_fall(psnrs, window=50, after=200):
    """The largest growth of the fall below the running best within `window` iterations, after iteration `after`
    (dB): a smooth fit that starts to fit the noise falls slowly (about 0.2 dB per 50 iterations here), a spike
    drops several dB within a few."""
    fall = np.maximum.accumulate(psnrs) - psnrs
    return float(np.max(fall[after + window :] - fall[after:-window]))


def first_fall(psnrs, drop):
    """The first iteration (1-based) at which the PSNR lies `drop` dB below its running best, or None."""
    below = np.flatnonzero(np.maximum.accumulate(psnrs) - psnrs >= drop)
    return int(below[0]) + 1 if len(below) else None


def describe(name, rows):
    """One line per variant: the averaged output's PSNR curve, the raw iterate's loss spikes, the weight norms."""
    loss, ema, raw, fed, rest = rows.T
    best = int(np.argmax(ema))
    # a loss spike: the raw iterate's loss more than doubles over its lowest value of the last 50 iterations
    floor = np.array([loss[max(0, i - 50) : i].min() if i else np.inf for i in range(len(loss))])
    spikes = np.flatnonzero(loss > 2 * floor)
    starts = spikes[np.r_[True, np.diff(spikes) > 10]] + 1 if len(spikes) else []
    return (f"{name:>20}: best {ema[best]:.2f} dB at {best + 1}, last {ema[-1]:.2f}; 0.5 / 1 dB below the best "
            f"at {first_fall(ema, 0.5)} / {first_fall(ema, 1.0)}; fastest fall {fastest_fall(ema):.2f} dB in 50 it; "
            f"loss spikes (x2) at {list(map(int, starts))[:8]}; last loss {loss[-1]:.4f}; |w|^2 BN-fed {fed[0]:.0f} "
            f"-> {fed[len(fed) // 2]:.1f} -> {fed[-1]:.1f}, rest {rest[0]:.0f} -> {rest[-1]:.1f}")


def run(config, name, scaling, iterations, seed=0):
    reg, lr, warm_up, decayed, adam = VARIANTS[name]
    torch.manual_seed(seed_of("dip_init", seed, scaling))
    net = UNet(scaling, config.width, config.depth, in_channels=config.input_channels)
    fed = fed_to_batchnorm(net)
    params = list(net.parameters())
    groups = [dict(params=[p for p in params if p in fed]), dict(params=[p for p in params if p not in fed])]
    decay = reg / scaling**2
    groups[0]["weight_decay"] = 0.0 if decayed == "bn-free" else decay
    groups[1]["weight_decay"] = decay if decayed == "all" else 0.0 if decayed == "bn-only" else decay
    optimizer = torch.optim.Adam(groups, lr=lr, **adam)
    clean, noisy = (x[None, None] for x in images(config, scaling))
    data_range = float(clean.max() - clean.min())
    fixed = blocks(base_input(config, seed), scaling)
    net.train()
    average, rows, tic = None, [], time.perf_counter()
    for i in range(iterations):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (i + 1) / warm_up) if warm_up else lr
        output = net(fixed + blocks(perturbation(config, seed, i), scaling))
        loss = F.mse_loss(output, noisy)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        output = output.detach()
        average = output if average is None else average * config.ema + output * (1 - config.ema)
        with torch.no_grad():
            norm_fed = sum(float(p.square().sum()) for p in fed)
            norm_rest = sum(float(p.square().sum()) for p in params if p not in fed)
        rows.append((loss.item(), psnr_of(average, clean, data_range), psnr_of(output, clean, data_range),
                     norm_fed, norm_rest))
    return np.array(rows), time.perf_counter() - tic


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--scaling", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--curves", default=None, help="write the curves to this .npz")
    parser.add_argument("--describe", nargs="+", default=None, help="only print the lines of these saved .npz curves")
    args = parser.parse_args()
    if args.describe:
        for path in args.describe:
            curves = np.load(path)
            print(f"{path}: {len(curves[curves.files[0]])} iterations")
            for name in curves.files:
                print(describe(name, curves[name]))
        return
    config = Config(**PRESETS["quick"])
    torch.set_num_threads(1)
    curves = {}
    print(f"s = {args.scaling}, {args.iterations} iterations, quick preset network, seed {args.seed}")
    for name in args.variants:
        rows, seconds = run(config, name, args.scaling, args.iterations, args.seed)
        curves[name] = rows
        print(f"{describe(name, rows)}; {seconds:.0f} s", flush=True)
    if args.curves:
        np.savez(args.curves, **curves)


if __name__ == "__main__":
    main()
