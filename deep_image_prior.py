"""The deep image prior (DIP) with the discretisation-consistent U-net of Habring & Holler.

An untrained U-net is fitted with Adam to one noisy image, its architecture acting as the prior; the
image is the modified Shepp-Logan phantom (utils/phantom.py), rasterised exactly at size_orig * s
pixels for resolution factors s = 1, 2, 3, so the ground truth has sharp edges at every s. The network
has kernels 3s wide and divides every convolution by s^2, and Adam gets weight_decay = reg / s^2, as in
the U-net experiment. Its fixed random input is drawn once at the base resolution and repeated over
s x s blocks, so every s sees the same input function. Every (s, reg) is fitted once per seed (input,
initialisation, perturbations), all seeds to the same noisy image. Hyperparameters stand in the block
below (the `paper` preset); a preset changes some, and every one is a flag:

    python deep_image_prior.py --preset quick
    python deep_image_prior.py --scalings 2 --weight-decays 0 --iterations 500 --seeds 0 1 2

Writes into --output-dir (default data/results/dip/<preset>): per fit (seed, s, reg) in fits/ a state that
a rerun resumes from (.state.pt: weights, optimizer, outputs so far), the PSNR per iteration (.csv) and the
config (.json); then metrics_per_seed.csv (every fit's outputs measured), metrics_summary.csv (the seeds
pooled: medians and ranges), comparison_best.png and comparison_final.png (the outputs at the iteration of
best PSNR and at the last one), psnr.png and arrays/ (.npz).
"""

import csv
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from models.trunks import UNet
from utils import metrics, phantom, plotting
from utils.config import ConfigError, Parser, add_config_flags, check_limits, check_writable, given_values, named_preset
from utils.device import DeviceError, amp_advice, autocast, pick_device
from utils.files import write_text_atomic
from utils.progress import progress
from utils.runs import seed_suffix, weight_decay
from utils.seeds import generator, seed_of
from utils.stopping import stop_on_signals
from utils.weights import CheckpointError, load_checkpoint, save_atomic


# ----------------------------------------------------------------------------------------------
# Hyperparameters: the paper preset (the DIP reference's values where PAPER.md gives them; the
# resolutions, weight decays and kernel scaling the authors used for DIP are unknown, so those are
# this project's choices). Edit here, pick a preset, or override with --flags.
# ----------------------------------------------------------------------------------------------
@dataclass
class Config:
    # image: the modified Shepp-Logan phantom plus noise
    size_orig: int = 256  # pixels at s = 1 (the authors' phantom.npy has 256); images are size_orig * s wide
    sigma_noise: float = 25 / 255  # std of the Gaussian noise per pixel (DIP's 25/255; authors' phantom_noisy.npy)
    clip: bool = True  # clip the noisy image to [0, 1], as DIP's reference and the authors' phantom_noisy.npy
    data_seed: int = 0  # seed of the noise, one draw per s
    cut_height: float = 0.1  # height y of the figures' cut (the phantom spans -1 to 1; 0.1 crosses both dark ellipses)
    # generator: the consistent U-net (kernels 3s, every conv divided by s^2)
    width: int = 64  # channels after the first DoubleConv
    depth: int = 4  # down-steps; size_orig must be divisible by 2^depth
    input_channels: int = 32  # channels of the fixed random input (DIP: 32)
    input_scale: float = 0.1  # the input: uniform on [0, input_scale) at size_orig px, repeated over s x s (DIP: 0.1)
    input_noise: float = 1 / 30  # std of the input's Gaussian perturbation, anew every iteration (DIP: 1/30; 0: off)
    # fitting
    scalings: tuple[int, ...] = (1, 2, 3)  # resolution factors s, each >= 1
    weight_decays: tuple[float, ...] = (0.0, 1e-3, 1e-2, 1e-1)  # reg values, each fitted at every s; Adam: reg / s^2
    seeds: tuple[int, ...] = (0,)  # one fit of every (s, reg) per seed (input, init, perturbations), one noisy image
    # A seed draws the fixed input, the initialisation (per s; the same for every reg) and the perturbations.
    # How long a fit runs, by one rule at every s: the reg 0 fit of a seed and s until its output's PSNR has fallen
    # stop_drop dB below its best (it has peaked and fits the noise), at most --iterations; the reg > 0 fits of
    # that seed and s as many iterations, so the final outputs of one s compare. metrics_summary.csv's column
    # `end` says per fit whether its PSNR fell that far, had peaked, or was still rising at its last iteration.
    iterations: int = 3000  # the most Adam steps per fit (DIP: 3000)
    stop_drop: float = 0.5  # dB under its best PSNR that ends a reg 0 fit and its seed and s's reg > 0 fits (0: off)
    # Weight decay acts here through the convolutions before each BatchNorm, whose scale the output ignores: it
    # shrinks them, and Adam's fixed step size then turns them ever faster; what counts is about lr * reg. At s = 1
    # DIP's lr 0.01 with reg 1e-3 makes the fit spike (PSNR falls of up to 5.2 dB in 50 iterations, five loss
    # spikes); lr 0.001 with reg 1e-2 holds the fit above the noise level as that does, with one spike of 1.2 dB,
    # its steps being smaller. Hence lr 0.001 and weight decays ten times those lr 0.01 needs; the reg 0 fit then
    # peaks at iteration 691 instead of 567 (benchmarks/trials/dip_weight_decay.txt).
    lr: float = 0.001  # Adam learning rate, the same at every s and reg (DIP: 0.01, with which weight decay spikes)
    ema: float = 0.99  # the output: this exponential average of the iterates' outputs (DIP: 0.99; 0: the last one)
    checkpoint_every: int = 250  # save the state and log a line every this many iterations (a stop saves too)
    output_dir: str = "data/results/dip/paper"  # where the fits and results go
    # speed (the default is float32)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda if available, else mps, else cpu
    amp: bool = False  # bfloat16 autocast: for GPUs; far slower on CPUs without native bfloat16 (AVX2 only)


PRESETS = {
    "paper": {},  # the block above, for a GPU
    "quick": dict(  # the same method scaled down to 2 CPU cores; see README, "Deep image prior"
        size_orig=64,
        width=16,
        depth=3,
        weight_decays=(0.0, 1e-2),
        seeds=(0, 1, 2, 3),  # the range of 4 seeds holds their median with probability 88% (see pooled)
        iterations=3000,  # DIP's: the reg 0 fits peak at iterations 689-777 (s = 1), 867-1038 (2), 2442-2962 (3)
        checkpoint_every=100,
        output_dir="data/results/dip/quick",
    ),
}

# Fields a rerun may change without starting the fits over: which fits run, where, how often they save; the
# figures' cut (evaluation only); the cap --iterations (a larger one continues the fits that reached the old one,
# exactly: nothing in a fit's course depends on its length; a smaller one is refused by check_length).
RESUMABLE_CHANGES = ("scalings", "weight_decays", "checkpoint_every", "output_dir", "device", "cut_height",
                     "iterations")
PROG = "deep_image_prior.py"

# ----------------------------------------------------------------------------------------------
# Command line: one flag per Config field, its help the field's comment above.
# ----------------------------------------------------------------------------------------------


def build_parser(preset="paper"):
    """The command line; --help shows the values of `preset` (the one named on the command line)."""
    parser = Parser(prog=PROG, description="Deep image prior with the consistent U-net on the Shepp-Logan phantom. "
                    "Values: the Config block (the paper preset) < --preset < flags. A rerun resumes every fit.",
                    epilog=f"[values shown: preset {preset}; give --preset NAME --help for another]")
    changed = {name: ", ".join(values) or "nothing" for name, values in PRESETS.items()}
    parser.add_argument("--preset", choices=list(PRESETS), default="paper",
                        help="named set of values: " + "; ".join(f"{n} changes {c}" for n, c in changed.items()))
    parser.add_argument("--fresh", action="store_true", help="start the chosen fits over, deleting their old states")
    add_config_flags(parser, Config, Config(**PRESETS[preset]), preset)
    return parser


def config_from_args(args):
    """Config defaults < preset < command line."""
    return Config(**{**PRESETS[args.preset], **given_values(args, Config)})


def check_config(c):
    """Raise ConfigError for a value that cannot run; nothing is written before this passes. Returns the device."""
    limits = [  # (holds, the sentence if it does not)
        (all(s >= 1 for s in c.scalings),
         f"every scaling must be >= 1, got --scalings {' '.join(map(str, c.scalings))}"),
        (min(c.weight_decays) >= 0, f"weight decays must be >= 0, got {' '.join(map(str, c.weight_decays))}"),
        (c.iterations >= 1, f"--iterations must be >= 1, got {c.iterations}"),
        (c.lr > 0, f"--lr must be > 0, got {c.lr}"),
        (0 <= c.ema < 1, f"--ema must be in [0, 1), got {c.ema}"),
        (c.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {c.checkpoint_every}"),
        (c.iterations >= c.checkpoint_every, f"--iterations {c.iterations} is below --checkpoint-every "
         f"{c.checkpoint_every}; give more iterations or a smaller --checkpoint-every"),
        (len(c.seeds) >= 1, "--seeds needs at least one seed"),
        (min(c.seeds, default=0) >= 0, f"every seed must be >= 0, got --seeds {' '.join(map(str, c.seeds))}"),
        (len(set(c.seeds)) == len(c.seeds), f"--seeds names a seed twice: {' '.join(map(str, c.seeds))}; "
         "each seed is one fit of every (s, reg)"),
        (c.stop_drop >= 0, f"--stop-drop must be >= 0, got {c.stop_drop}"),
        (not c.stop_drop or 0 in c.weight_decays, "with --stop-drop the reg > 0 fits run as long as the reg 0 fit of "
         "their seed and s, so --weight-decays must include 0 (or give --stop-drop 0)"),
        (c.size_orig >= 1, f"--size-orig must be >= 1, got {c.size_orig}"),
        (c.width >= 2 and c.depth >= 1, f"--width must be >= 2 and --depth >= 1, got {c.width} and {c.depth}"),
        (c.input_channels >= 1, f"--input-channels must be >= 1, got {c.input_channels}"),
        (min(c.sigma_noise, c.input_scale, c.input_noise) >= 0,
         "--sigma-noise, --input-scale and --input-noise must be >= 0, "
         f"got {c.sigma_noise}, {c.input_scale} and {c.input_noise}"),
        (abs(c.cut_height) < 1, f"--cut-height must lie inside the phantom, between -1 and 1, got {c.cut_height}"),
        (c.size_orig % 2**c.depth == 0, f"--size-orig {c.size_orig} must be divisible by 2^depth = {2**c.depth}"),
    ]
    check_limits(limits)
    try:
        device = pick_device(c.device)
    except DeviceError as err:
        raise ConfigError(str(err)) from None
    check_writable(c.output_dir, "--output-dir")
    return device


# ----------------------------------------------------------------------------------------------
# The image and the network's input at resolution factor s
# ----------------------------------------------------------------------------------------------


def images(config, scaling):
    """(clean, noisy), each (N, N) float32 with N = size_orig * s: the phantom and one seeded noise draw for this s."""
    size = config.size_orig * scaling
    clean = torch.from_numpy(phantom.levels(size))
    noise = torch.randn(size, size, generator=generator("cpu", seed_of("dip_noise", config.data_seed, scaling)))
    noisy = clean + config.sigma_noise * noise
    return clean, noisy.clamp(0, 1) if config.clip else noisy


def blocks(x, scaling):
    """Repeat every pixel over s x s pixels: (B, C, n, n) -> (B, C, n s, n s), the same function on a finer grid."""
    return x.repeat_interleave(scaling, dim=-2).repeat_interleave(scaling, dim=-1)


def base_input(config, seed):
    """The fixed input at the base resolution, (1, C, size_orig, size_orig): uniform on [0, input_scale)."""
    shape = (1, config.input_channels, config.size_orig, config.size_orig)
    return torch.rand(shape, generator=generator("cpu", seed_of("dip_input", seed))) * config.input_scale


def perturbation(config, seed, iteration):
    """The input's perturbation at this iteration (0-based), at the base resolution; seeded per iteration,
    so a resumed fit draws what an uninterrupted one draws."""
    shape = (1, config.input_channels, config.size_orig, config.size_orig)
    draw = generator("cpu", seed_of("dip_perturb", seed, iteration))
    return torch.randn(shape, generator=draw) * config.input_noise


def cut_row(config, size):
    """The row of an image of `size` pixels that contains height cut_height (the same line at every s)."""
    return min(int((config.cut_height / phantom.HALF_WIDTH + 1) * size / 2), size - 1)


def psnr_of(output, clean, data_range):
    """PSNR in dB as utils.metrics.psnr computes it, in torch, for the curve over the iterations."""
    return (10 * torch.log10(data_range**2 / F.mse_loss(output, clean))).item()


# ----------------------------------------------------------------------------------------------
# Files of a fit: fits/scaling_S_reg_R[_seed_K].state.pt (what a rerun resumes), .csv (the curve), .json (config)
# ----------------------------------------------------------------------------------------------


class Fit(NamedTuple):
    """One fit: a seed, a resolution factor s and a weight decay reg."""

    seed: int
    scaling: int
    reg: float

    def __str__(self):
        return f"seed={self.seed} s={self.scaling} reg={self.reg:g}"


def all_fits(config):
    """Every fit in the order they run: seed by seed, so a study stopped early has whole seeds; at each (seed, s)
    reg 0 first, since with stop_drop the others run as many iterations as it did."""
    regs = sorted(config.weight_decays, key=lambda reg: reg != 0)
    return [Fit(seed, s, reg) for seed in config.seeds for s in config.scalings for reg in regs]


def fit_path(config, fit, suffix):
    name = f"scaling_{fit.scaling}_reg_{fit.reg:g}{seed_suffix(fit.seed)}{suffix}"
    return Path(config.output_dir) / "fits" / name


def fit_config(config, fit):
    """The values that made one fit: the Config's, with its own seed instead of the list."""
    values = asdict(config)
    del values["seeds"]
    return dict(values, seed=fit.seed, scaling=fit.scaling, reg=fit.reg)


def read_state(config, fit, mmap=False):
    """The fit's state, or None; a state made with other values is a ConfigError."""
    path = fit_path(config, fit, ".state.pt")
    if not path.exists():
        return None
    state = load_checkpoint(path, mmap=mmap)
    saved = state["config"]
    for name, value in fit_config(config, fit).items():
        if name not in RESUMABLE_CHANGES and saved.get(name) != value:
            raise ConfigError(f"the fit {path} was made with {name} = {saved.get(name)!r}, this command has {value!r}; "
                              "use --fresh to start it over or another --output-dir")
    return state


def write_curve(path, history):
    """The per-iteration curve as CSV, rewritten whole so it always matches the state."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["iteration", "loss", "psnr"])
    writer.writerows((i + 1, f"{loss:.6g}", f"{psnr:.4f}") for i, (loss, psnr) in enumerate(zip(*history, strict=True)))
    write_text_atomic(path, text.getvalue())


# ----------------------------------------------------------------------------------------------
# How long a fit runs: the reg 0 fit until its output has fallen stop_drop dB below its best PSNR (or the
# cap --iterations); the reg > 0 fits of the same seed and s as long, so the final outputs of one s compare.
# ----------------------------------------------------------------------------------------------


def fallen(best_psnr, psnr, stop_drop):
    """Whether the output's PSNR lies stop_drop dB or more below its best so far (never with stop_drop 0)."""
    return stop_drop > 0 and best_psnr - psnr >= stop_drop


def end_of(psnrs, stop_drop):
    """How a fit's PSNR curve ends: "fell" stop_drop dB or more below its best, "rising" (best at the last
    iteration: the fit had not peaked), or "peaked" (fell less than stop_drop)."""
    best = int(np.argmax(psnrs))
    if best == len(psnrs) - 1:
        return "rising"
    return "fell" if fallen(psnrs[best], psnrs[-1], stop_drop) else "peaked"


def planned(config, fit):
    """The iterations this fit runs at most: --iterations, or with stop_drop (reg > 0) as many as the reg 0 fit of
    its seed and s ran; None while that one is unfinished."""
    if fit.reg == 0 or not config.stop_drop:
        return config.iterations
    first = fit._replace(reg=0.0)
    state = read_state(config, first, mmap=True)
    done = state is not None and finished(config, first, state["progress"], config.iterations)
    return state["progress"]["done"] if done else None


def finished(config, fit, run, length):
    """Whether a fit planned() to run `length` iterations has run all it will: a reg 0 fit until its PSNR has
    fallen (or the cap), the others all of them."""
    if fit.reg == 0 and run["done"] and fallen(run["best_psnr"], run["psnrs"][-1], config.stop_drop):
        return True
    return run["done"] == length


def check_length(config, fit, run, length):
    """A ConfigError if the fit has run more than the `length` iterations planned() for it: a cap below what it ran,
    or its reg 0 fit fitted anew and ended earlier."""
    if length is not None and run["done"] > length:
        limit = (f"--iterations {length}" if length == config.iterations
                 else f"the {length} of the reg 0 fit of its seed and s")
        raise ConfigError(f"the fit {fit_path(config, fit, '.state.pt')} has run {run['done']} iterations, more than "
                          f"{limit}; use --fresh to start it over or another --output-dir")


# ----------------------------------------------------------------------------------------------
# Fitting: Adam on the mean squared error to the noisy image, the output averaged over the iterates
# ----------------------------------------------------------------------------------------------


def new_progress():
    """What a fit carries between iterations besides weights and optimizer; saved with them."""
    return dict(done=0, average=None, best=None, best_iteration=0, best_psnr=-math.inf, losses=[], psnrs=[],
                seconds=0.0)


def start_fit(config, fit, device):
    """The network, its optimizer and the fit's progress: from the saved state, or freshly initialised."""
    state = read_state(config, fit)
    torch.manual_seed(seed_of("dip_init", fit.seed, fit.scaling))  # the same initialisation for every reg at this s
    net = UNet(fit.scaling, config.width, config.depth, in_channels=config.input_channels)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=weight_decay(fit.reg, fit.scaling))
    if state is None:
        record = json.dumps(fit_config(config, fit), indent=2) + "\n"  # the values that made this fit
        write_text_atomic(fit_path(config, fit, ".json"), record)
        return net.to(device), optimizer, new_progress()
    net.load_state_dict(state["model"])
    net.to(device)
    optimizer.load_state_dict(state["optimizer"])  # after the move: its moments go to the parameters' device
    return net, optimizer, state["progress"]


def save_state(config, fit, net, optimizer, run):
    """The state a rerun resumes from, then the curve; both written atomically."""
    model = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    cpu = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in run.items()}
    state = dict(model=model, optimizer=optimizer.state_dict(), progress=cpu, config=fit_config(config, fit))
    save_atomic(state, fit_path(config, fit, ".state.pt"))
    write_curve(fit_path(config, fit, ".csv"), (run["losses"], run["psnrs"]))


def step(config, net, optimizer, x, noisy, run, clean, data_range):
    """One Adam step; the output of this iterate enters the average, whose PSNR decides the best iterate."""
    with autocast(config.amp, clean.device):
        output = net(x)  # (1, 1, N, N)
    loss = F.mse_loss(output.float(), noisy)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    output = output.detach().float()
    run["average"] = output if run["average"] is None else run["average"] * config.ema + output * (1 - config.ema)
    run["done"] += 1
    run["losses"].append(loss.item())
    run["psnrs"].append(psnr_of(run["average"], clean, data_range))
    if run["psnrs"][-1] > run["best_psnr"]:
        run["best"], run["best_iteration"], run["best_psnr"] = run["average"].clone(), run["done"], run["psnrs"][-1]


def fit_one(config, fit, device, stop):
    """Run one fit to its end, resuming from its state; returns a signal number if stopped, else 0."""
    net, optimizer, run = start_fit(config, fit, device)
    path, length = fit_path(config, fit, ".state.pt"), planned(config, fit)
    check_length(config, fit, run, length)
    if finished(config, fit, run, length):
        print(f"{fit}: already fitted, {path}")
        return 0
    for key in ("average", "best"):
        run[key] = run[key].to(device) if run[key] is not None else None
    clean, noisy = (x[None, None].to(device) for x in images(config, fit.scaling))  # (1, 1, N, N) each
    data_range = float(clean.max() - clean.min())
    fixed = blocks(base_input(config, fit.seed), fit.scaling).to(device)  # (1, C, N, N)
    size = config.size_orig * fit.scaling
    start = f"resuming at iteration {run['done'] + 1}" if run["done"] else "fresh init"
    until = f"at most {length} iterations" if fit.reg == 0 and config.stop_drop else f"{length} iterations"
    print(f"{fit}: {sum(p.numel() for p in net.parameters()):,} parameters, {size}x{size} px, Adam weight decay "
          f"{weight_decay(fit.reg, fit.scaling):g}, {until}, {start}, on {device}", flush=True)
    net.train()  # BatchNorm on the one image's statistics, as in DIP's reference
    bar = progress(total=length, initial=run["done"], desc=str(fit), unit="it", leave=False)
    tic, first = time.perf_counter(), run["done"]
    while not finished(config, fit, run, length):
        noise = blocks(perturbation(config, fit.seed, run["done"]), fit.scaling).to(device)
        step(config, net, optimizer, fixed + noise if config.input_noise else fixed, noisy, run, clean, data_range)
        bar.update()
        signum = stop.signum
        if signum or run["done"] % config.checkpoint_every == 0 or finished(config, fit, run, length):
            elapsed = time.perf_counter() - tic
            run["seconds"] += elapsed
            tic = time.perf_counter()
            save_state(config, fit, net, optimizer, run)
            print(f"{fit} iteration {run['done']}/{length}: loss {run['losses'][-1]:.5f}, PSNR "
                  f"{run['psnrs'][-1]:.2f} dB, best {run['best_psnr']:.2f} dB at {run['best_iteration']}, "
                  f"{1000 * elapsed / (run['done'] - first):.0f} ms/it, {run['seconds']:.0f} s", flush=True)
            first = run["done"]
        if signum:
            bar.close()
            print(f"{fit}: stopped after iteration {run['done']}; state saved to {path}; rerun the same command "
                  "to resume", flush=True)
            return signum
    bar.close()
    if fit.reg == 0 and run["done"] < config.iterations:
        print(f"{fit}: PSNR fell {config.stop_drop:g} dB below its best, so the fit ends at iteration {run['done']}")
    return 0


# ----------------------------------------------------------------------------------------------
# Results: metrics_per_seed.csv, metrics_summary.csv (the seeds pooled), the figures and the arrays
# ----------------------------------------------------------------------------------------------
MEASURES = tuple(f"{m}{end}" for m in metrics.SET_MEASURES for end in ("", "_low", "_high"))
# The U-net summary's columns (scaling, reg, n_images, n_edges, the measures), reg naming the reference rows
# ground_truth and noisy_input as there, and the fits' own: kind (best or final output; empty for the references),
# the seed or, pooled, n_seeds, the iteration the output is from, and how the fit's PSNR curve ended (end_of).
PER_SEED_COLUMNS = ("scaling", "reg", "kind", "seed", "iteration", "end", "n_images", "n_edges", *MEASURES)
SUMMARY_COLUMNS = ("scaling", "reg", "kind", "n_seeds", "iteration", "iteration_low", "iteration_high", "end",
                   "n_images", "n_edges", *MEASURES)
KINDS = ("best", "final")  # the output at the iteration of best PSNR (chosen with the ground truth) and at the last
ENDS = ("fell", "peaked", "rising")  # end_of's answers, in the order metrics_summary.csv counts them


def collect(config):
    """Per s: clean, noisy (N, N) numpy and, per finished fit (seed, reg), its outputs, iterations and curve."""
    results = {}
    for s in config.scalings:
        clean, noisy = (x.numpy() for x in images(config, s))
        fits = {}
        for fit in all_fits(config):
            state = read_state(config, fit) if fit.scaling == s else None
            if state is None or not finished(config, fit, state["progress"], planned(config, fit)):
                continue
            run = state["progress"]
            psnrs = np.array(run["psnrs"])
            fits[fit.seed, fit.reg] = dict(best=run["best"][0, 0].numpy(), final=run["average"][0, 0].numpy(),
                                           best_iteration=run["best_iteration"], iteration=run["done"], psnrs=psnrs,
                                           end=end_of(psnrs, config.stop_drop), seconds=run["seconds"])
        results[s] = dict(clean=clean, noisy=noisy, fits=fits)
    return results


def per_seed_rows(config, results):
    """metrics_per_seed.csv's rows: per s and seed the ground truth and the noisy input (the same image for every
    seed), then per reg the best and the final output.

    One image per row, so the intervals of the edge measures come from resampling its edges in blocks of
    GAP * s rows (one kernel's height: neighbouring rows cross the same border); PSNR and SSIM have none.
    """
    rows = []
    for s, result in results.items():
        def measured(image, s=s, clean=result["clean"]):
            return metrics.set_summary(image[None], clean[None], s, row_block=metrics.GAP * s)

        references = [dict(reg=metrics.GROUND_TRUTH, **measured(result["clean"])),
                      dict(reg=metrics.NOISY_INPUT, **measured(result["noisy"]))]
        for seed in config.seeds:
            regs = [reg for reg in config.weight_decays if (seed, reg) in result["fits"]]
            rows += [dict(row, scaling=s, kind="", seed=seed, iteration="", end="") for row in references if regs]
            for reg in regs:
                fit_result = result["fits"][seed, reg]
                iterations = dict(best=fit_result["best_iteration"], final=fit_result["iteration"])
                rows += [dict(scaling=s, reg=reg, kind=kind, seed=seed, iteration=iterations[kind],
                              end=fit_result["end"], **measured(fit_result[kind])) for kind in KINDS]
    return rows


def pooled(rows):
    """One metrics_summary.csv row from the metrics_per_seed.csv rows of one (s, reg, kind), one per seed: the
    median over the seeds of the iteration and of each measure, and as _low / _high the smallest and the largest
    seed's value; end counts the seeds per way their fits ended.

    The range over the seeds, not a bootstrap: with 3 to 5 seeds a bootstrap's percentiles are hardly more than
    the extremes themselves. For n seeds the range holds the median of the seeds' distribution with probability
    1 - 2^(1 - n), whatever that distribution: 75% for 3 seeds, 88% for 4, 94% for 5.
    """
    row = {name: rows[0][name] for name in ("scaling", "reg", "kind", "n_images", "n_edges")}
    ends = [r["end"] for r in rows]
    row.update(n_seeds=len(rows), end=", ".join(f"{end} {ends.count(end)}" for end in ENDS if end in ends))
    for name in ("iteration", *metrics.SET_MEASURES):
        values = [r[name] for r in rows]
        row[name], row[f"{name}_low"], row[f"{name}_high"] = (
            ("", "", "") if "" in values else (float(np.median(values)), float(min(values)), float(max(values))))
    return row


def summary_rows(per_seed):
    """metrics_summary.csv's rows: per s the references, then per reg the best and the final output, seeds pooled."""
    groups = {}
    for row in per_seed:
        groups.setdefault((row["scaling"], row["reg"], row["kind"]), []).append(row)
    return [pooled(rows) for rows in groups.values()]


def write_table(path, rows, columns):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in columns])


def write_arrays(folder, config, results):
    """arrays/input.npz (each seed's fixed input at the base resolution) and per s scaling{s}.npz."""
    folder.mkdir(exist_ok=True)
    inputs = {f"input{seed_suffix(seed)}": base_input(config, seed)[0].numpy() for seed in config.seeds}
    np.savez(folder / "input.npz", **inputs)  # (C, size_orig, size_orig) each
    names = {"best": "best", "final": "final", "best_iteration": "best_iteration", "psnrs": "psnr"}
    for s, result in results.items():
        per_fit = {f"{name}_reg{reg:g}{seed_suffix(seed)}": fit_result[key]
                   for (seed, reg), fit_result in result["fits"].items() for key, name in names.items()}
        np.savez(folder / f"scaling{s}.npz", noisy=result["noisy"], ground_truth=result["clean"], **per_fit)


def caption(config, results):
    """The figures' small print: which image, network and fitting made them."""
    c = config
    best = []  # per s a line: per reg the range of the seeds' best iterations
    for s, result in results.items():
        ranges = []
        for reg in c.weight_decays:
            its = sorted(f["best_iteration"] for (_, r), f in result["fits"].items() if r == reg)
            if its:
                ranges.append(f"reg {reg:g}: {its[0]}" + (f"-{its[-1]}" if its[-1] > its[0] else ""))
        best.append(f"  s = {s}: {', '.join(ranges)}")
    return "\n".join([
        f"image: modified Shepp-Logan phantom at {c.size_orig} * s px, noise sigma {c.sigma_noise:.4g} per pixel"
        + (", clipped to [0, 1]" if c.clip else "")
        + f", seed {c.data_seed} (one draw per s, the same for every fit); cut at height y = {c.cut_height}",
        f"network: consistent U-net, width {c.width}, depth {c.depth}, kernels 3s, convs / s^2; "
        f"input {c.input_channels} channels, uniform [0, {c.input_scale})",
        f"  at {c.size_orig} px repeated over s x s blocks, perturbed by Gaussian noise of std {c.input_noise:.4g} "
        "every iteration",
        f"fit: Adam lr {c.lr}, weight decay reg / s^2; output = exponential average {c.ema} of the iterates; "
        f"seeds {' '.join(map(str, c.seeds))}",
        f"  the reg 0 fit of each seed and s until its PSNR falls {c.stop_drop:g} dB below its best (at most "
        f"{c.iterations} iterations), the reg > 0 fits as long" if c.stop_drop else f"  {c.iterations} iterations",
        "best iterations, smallest-largest over the seeds (by PSNR against the ground truth):",
        *best,
    ])


def figures(config, preset, results, rows, folder):
    """comparison_best.png, comparison_final.png (one row per reg, noisy and truth at the first s; the first seed's
    outputs with the other seeds' cuts faint) and psnr.png (per s the seeds' PSNR curves as a band)."""
    scalings, first = list(results), config.seeds[0]
    regs = [reg for reg in config.weight_decays if all((first, reg) in results[s]["fits"] for s in scalings)]
    if not regs:
        print(f"no weight decay is fitted at every s for seed {first} yet: no figures")
        return
    small_print = caption(config, results)
    fits = {s: results[s]["fits"] for s in scalings}
    others = {s: {reg: [f for (seed, r), f in fits[s].items() if r == reg and seed != first] for reg in regs}
              for s in scalings}
    s0 = scalings[0]
    row_of = {s: cut_row(config, config.size_orig * s) for s in scalings}
    repeat = len(regs)
    n_others = max(len(group) for groups in others.values() for group in groups.values())
    others_are = "the other seed's" if n_others == 1 else f"the other {n_others} seeds'"
    faint = f"\nfaint dots: {others_are} values along the same row" if n_others else ""
    for kind in KINDS:
        truth = {s: [results[s]["clean"]] * repeat for s in scalings}
        columns = [(f"noisy input, s = {s0}", [results[s0]["noisy"]] * repeat, [row_of[s0]] * repeat, truth[s0]),
                   (f"ground truth, s = {s0}", truth[s0], [row_of[s0]] * repeat, None)]
        columns += [(f"DIP, s = {s}", [fits[s][first, reg][kind] for reg in regs], [row_of[s]] * repeat, truth[s],
                     [[f[kind] for f in others[s][reg]] for reg in regs]) for s in scalings]
        when = "iteration of best PSNR" if kind == "best" else "last iteration"
        title = f"Deep image prior outputs at the {when}, preset {preset}, seed {first}"
        plotting.comparison_figure(folder / f"comparison_{kind}.png", columns, title, small_print + faint,
                                   row_labels=[f"reg = {reg:g}" for reg in regs])
    noisy_psnr = {row["scaling"]: row["psnr"] for row in rows if row["reg"] == metrics.NOISY_INPUT}
    panels = {f"reg = {reg:g}": {f"s = {s}": ([f["psnrs"] for (_, r), f in fits[s].items() if r == reg],
                                             [f["best_iteration"] for (_, r), f in fits[s].items() if r == reg],
                                             noisy_psnr[s]) for s in scalings} for reg in regs}
    title = f"Deep image prior: PSNR of the output against iteration, preset {preset}"
    plotting.psnr_figure(folder / "psnr.png", panels, title, small_print)


def describe(row):
    """A metrics_summary.csv row as one line of the console's table."""
    interval = "{:.3f} [{:.3f}, {:.3f}]".format
    what = f"{row['reg']:>12}" if not row["kind"] else f"reg {row['reg']:<5g} {row['kind']:>5}"
    line = f"s = {row['scaling']} {what}"
    if row["kind"]:
        line += f" it {row['iteration']:g} [{row['iteration_low']:g}, {row['iteration_high']:g}]"
    return (f"{line}: jump ratio {interval(row['jump_ratio'], row['jump_ratio_low'], row['jump_ratio_high'])}, "
            f"rise width {interval(row['rise_width_phys'], row['rise_width_phys_low'], row['rise_width_phys_high'])} "
            f"of the width, PSNR {interval(row['psnr'], row['psnr_low'], row['psnr_high'])} dB"
            + (f", {row['n_seeds']} seeds: {row['end']}" if row["kind"] else ""))


def evaluate(config, preset):
    """Every result file from the finished fits; returns metrics_summary.csv's rows."""
    folder = Path(config.output_dir)
    results = collect(config)
    missing = [str(f) for f in all_fits(config) if (f.seed, f.reg) not in results[f.scaling]["fits"]]
    if missing:
        print(f"not finished, left out of the results: {'; '.join(missing)}")
    per_seed = per_seed_rows(config, results)
    rows = summary_rows(per_seed)
    write_table(folder / "metrics_per_seed.csv", per_seed, PER_SEED_COLUMNS)
    write_table(folder / "metrics_summary.csv", rows, SUMMARY_COLUMNS)
    write_arrays(folder / "arrays", config, results)
    figures(config, preset, results, rows, folder)
    print("medians over the seeds [smallest, largest]; rise width in units of the image width")
    for row in rows:
        print(describe(row))
    print(f"wrote metrics_summary.csv, metrics_per_seed.csv, arrays/ and the figures into {folder}")
    return rows


def fail(message):
    """One line naming the problem, exit status 2, as argparse does for a bad flag."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    args = build_parser(named_preset(argv, PRESETS)).parse_args(argv)
    try:
        config = config_from_args(args)
        device = check_config(config)
        for fit in all_fits(config):  # a foreign or corrupt state stops the run before it starts
            if args.fresh:
                for suffix in (".state.pt", ".csv", ".json"):
                    fit_path(config, fit, suffix).unlink(missing_ok=True)
            else:
                state = read_state(config, fit, mmap=True)
                if state is not None:
                    check_length(config, fit, state["progress"], planned(config, fit))
    except (ConfigError, CheckpointError) as err:
        fail(err)
    amp_advice(config.amp, device, PROG)
    (Path(config.output_dir) / "fits").mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with stop_on_signals() as stop:
        for fit in all_fits(config):
            try:
                signum = stop.signum or fit_one(config, fit, device, stop)
            except ConfigError as err:
                fail(err)
            if signum:
                sys.exit(128 + signum)
    print(f"fits done in {time.perf_counter() - tic:.0f} s")
    evaluate(config, args.preset)


if __name__ == "__main__":
    main()
