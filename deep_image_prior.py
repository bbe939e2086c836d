"""The deep image prior (DIP) with the discretisation-consistent U-net of Habring & Holler.

An untrained U-net is fitted with Adam to one noisy image, its architecture acting as the prior; the
image is the modified Shepp-Logan phantom (utils/phantom.py), rasterised exactly at size_orig * s
pixels for resolution factors s = 1, 2, 3, so the ground truth has sharp edges at every s. The network
has kernels 3s wide and divides every convolution by s^2, and Adam gets weight_decay = reg / s^2, as in
the U-net experiment. Its fixed random input is drawn once at the base resolution and repeated over
s x s blocks, so every s sees the same input function. Hyperparameters stand in the block below (the
`paper` preset); a preset changes some, and every one is a flag:

    python deep_image_prior.py --preset quick          # 2 CPU cores, about 21 minutes
    python deep_image_prior.py --scalings 2 --weight-decays 0 --iterations 500

Writes into --output-dir (default data/results/dip/<preset>): per fit (s, reg) in fits/ a state that a
rerun resumes from (.state.pt: weights, optimizer, outputs so far), the PSNR per iteration (.csv) and the
config (.json); then comparison_best.png and comparison_final.png (the outputs at the iteration of best
PSNR and at the last one), psnr.png, metrics_summary.csv and arrays/ (.npz).
"""

import csv
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.trunks import UNet
from utils import metrics, phantom, plotting
from utils.config import ConfigError, Parser, add_config_flags, check_limits, check_writable, given_values, named_preset
from utils.device import DeviceError, amp_advice, autocast, pick_device
from utils.files import write_text_atomic
from utils.progress import progress
from utils.runs import weight_decay
from utils.seeds import generator, seed_of
from utils.stopping import stop_on_signals
from utils.weights import CheckpointError, load_checkpoint, save_atomic


# ----------------------------------------------------------------------------------------------
# Hyperparameters: the paper preset (the DIP reference's values where docs/paper.md gives them; the
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
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)  # reg values, each fitted at every s; Adam: reg / s^2
    iterations: int = 3000  # Adam steps per fit (DIP: 3000)
    lr: float = 0.01  # Adam learning rate (DIP: 0.01)
    ema: float = 0.99  # the output: this exponential average of the iterates' outputs (DIP: 0.99; 0: the last one)
    seed: int = 0  # seed of the input, the initialisation (the same for every reg at one s) and the perturbations
    checkpoint_every: int = 250  # save the state and log a line every this many iterations (a stop saves too)
    output_dir: str = "data/results/dip/paper"  # where the fits and results go
    # speed (the default is float32)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda if available, else mps, else cpu
    amp: bool = False  # bfloat16 autocast: for GPUs; far slower on CPUs without native bfloat16 (AVX2 only)


PRESETS = {
    "paper": {},  # the block above, for a GPU
    "quick": dict(  # the same method scaled down to 2 CPU cores and about 21 minutes; see README, "Deep image prior"
        size_orig=64,
        width=16,
        depth=3,
        weight_decays=(0.0, 1e-3),
        iterations=1200,
        checkpoint_every=100,
        output_dir="data/results/dip/quick",
    ),
}

# Fields a rerun may change without starting the fits over: which fits run, where, how often they save,
# and the figures' cut (evaluation only).
RESUMABLE_CHANGES = ("scalings", "weight_decays", "checkpoint_every", "output_dir", "device", "cut_height")
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


def base_input(config):
    """The fixed input at the base resolution, (1, C, size_orig, size_orig): uniform on [0, input_scale)."""
    shape = (1, config.input_channels, config.size_orig, config.size_orig)
    return torch.rand(shape, generator=generator("cpu", seed_of("dip_input", config.seed))) * config.input_scale


def perturbation(config, iteration):
    """The input's perturbation at this iteration (0-based), at the base resolution; seeded per iteration,
    so a resumed fit draws what an uninterrupted one draws."""
    shape = (1, config.input_channels, config.size_orig, config.size_orig)
    draw = generator("cpu", seed_of("dip_perturb", config.seed, iteration))
    return torch.randn(shape, generator=draw) * config.input_noise


def cut_row(config, size):
    """The row of an image of `size` pixels that contains height cut_height (the same line at every s)."""
    return min(int((config.cut_height / phantom.HALF_WIDTH + 1) * size / 2), size - 1)


def psnr_of(output, clean, data_range):
    """PSNR in dB as utils.metrics.psnr computes it, in torch, for the curve over the iterations."""
    return (10 * torch.log10(data_range**2 / F.mse_loss(output, clean))).item()


# ----------------------------------------------------------------------------------------------
# Files of a fit: fits/scaling_S_reg_R.state.pt (what a rerun resumes), .csv (the curve), .json (config)
# ----------------------------------------------------------------------------------------------


def fit_path(config, scaling, reg, suffix):
    return Path(config.output_dir) / "fits" / f"scaling_{scaling}_reg_{reg:g}{suffix}"


def fit_config(config, scaling, reg):
    return dict(asdict(config), scaling=scaling, reg=reg)


def read_state(config, scaling, reg, mmap=False):
    """The fit's state, or None; a state made with other values is a ConfigError."""
    path = fit_path(config, scaling, reg, ".state.pt")
    if not path.exists():
        return None
    state = load_checkpoint(path, mmap=mmap)
    saved = state["config"]
    for name, value in fit_config(config, scaling, reg).items():
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
# Fitting: Adam on the mean squared error to the noisy image, the output averaged over the iterates
# ----------------------------------------------------------------------------------------------


def new_progress():
    """What a fit carries between iterations besides weights and optimizer; saved with them."""
    return dict(done=0, average=None, best=None, best_iteration=0, best_psnr=-math.inf, losses=[], psnrs=[],
                seconds=0.0)


def start_fit(config, scaling, reg, device):
    """The network, its optimizer and the fit's progress: from the saved state, or freshly initialised."""
    state = read_state(config, scaling, reg)
    torch.manual_seed(seed_of("dip_init", config.seed, scaling))  # the same initialisation for every reg at this s
    net = UNet(scaling, config.width, config.depth, in_channels=config.input_channels)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=weight_decay(reg, scaling))
    if state is None:
        record = json.dumps(fit_config(config, scaling, reg), indent=2) + "\n"  # the values that made this fit
        write_text_atomic(fit_path(config, scaling, reg, ".json"), record)
        return net.to(device), optimizer, new_progress()
    net.load_state_dict(state["model"])
    net.to(device)
    optimizer.load_state_dict(state["optimizer"])  # after the move: its moments go to the parameters' device
    return net, optimizer, state["progress"]


def save_state(config, scaling, reg, net, optimizer, run):
    """The state a rerun resumes from, then the curve; both written atomically."""
    model = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    cpu = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in run.items()}
    state = dict(model=model, optimizer=optimizer.state_dict(), progress=cpu, config=fit_config(config, scaling, reg))
    save_atomic(state, fit_path(config, scaling, reg, ".state.pt"))
    write_curve(fit_path(config, scaling, reg, ".csv"), (run["losses"], run["psnrs"]))


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


def fit(config, scaling, reg, device, stop):
    """Fit one (s, reg), resuming from its state; returns a signal number if stopped, else 0."""
    name = f"s={scaling} reg={reg:g}"
    net, optimizer, run = start_fit(config, scaling, reg, device)
    if run["done"] == config.iterations:
        print(f"{name}: already fitted, {fit_path(config, scaling, reg, '.state.pt')}")
        return 0
    for key in ("average", "best"):
        run[key] = run[key].to(device) if run[key] is not None else None
    clean, noisy = (x[None, None].to(device) for x in images(config, scaling))  # (1, 1, N, N) each
    data_range = float(clean.max() - clean.min())
    fixed = blocks(base_input(config), scaling).to(device)  # (1, C, N, N)
    size = config.size_orig * scaling
    start = f"resuming at iteration {run['done'] + 1}" if run["done"] else "fresh init"
    print(f"{name}: {sum(p.numel() for p in net.parameters()):,} parameters, {size}x{size} px, Adam weight decay "
          f"{weight_decay(reg, scaling):g}, {start}, on {device}", flush=True)
    net.train()  # BatchNorm on the one image's statistics, as in DIP's reference
    bar = progress(total=config.iterations, initial=run["done"], desc=name, unit="it", leave=False)
    tic, first = time.perf_counter(), run["done"]
    while run["done"] < config.iterations:
        x = fixed + blocks(perturbation(config, run["done"]), scaling).to(device) if config.input_noise else fixed
        step(config, net, optimizer, x, noisy, run, clean, data_range)
        bar.update()
        signum = stop.signum
        if signum or run["done"] % config.checkpoint_every == 0 or run["done"] == config.iterations:
            elapsed = time.perf_counter() - tic
            run["seconds"] += elapsed
            tic = time.perf_counter()
            save_state(config, scaling, reg, net, optimizer, run)
            print(f"{name} iteration {run['done']}/{config.iterations}: loss {run['losses'][-1]:.5f}, PSNR "
                  f"{run['psnrs'][-1]:.2f} dB, best {run['best_psnr']:.2f} dB at {run['best_iteration']}, "
                  f"{1000 * elapsed / (run['done'] - first):.0f} ms/it, {run['seconds']:.0f} s", flush=True)
            first = run["done"]
        if signum:
            bar.close()
            print(f"{name}: stopped after iteration {run['done']}; state saved to "
                  f"{fit_path(config, scaling, reg, '.state.pt')}; rerun the same command to resume", flush=True)
            return signum
    bar.close()
    return 0


# ----------------------------------------------------------------------------------------------
# Results: the comparison figures, the PSNR curves, metrics_summary.csv and the arrays
# ----------------------------------------------------------------------------------------------
SUMMARY_COLUMNS = ("scaling", "reg", "kind", "iteration", "n_images", "n_edges",
                   *(f"{m}{end}" for m in metrics.SET_MEASURES for end in ("", "_low", "_high")))
KINDS = ("best", "final")  # the output at the iteration of best PSNR (chosen with the ground truth) and at the last


def collect(config):
    """Per s: clean, noisy (N, N) numpy and, per reg with a finished fit, its outputs, best iteration and curve."""
    results = {}
    for s in config.scalings:
        clean, noisy = (x.numpy() for x in images(config, s))
        fits = {}
        for reg in config.weight_decays:
            state = read_state(config, s, reg)
            if state is None or state["progress"]["done"] < config.iterations:
                continue
            run = state["progress"]
            fits[reg] = dict(best=run["best"][0, 0].numpy(), final=run["average"][0, 0].numpy(),
                             best_iteration=run["best_iteration"], psnrs=np.array(run["psnrs"]), seconds=run["seconds"])
        results[s] = dict(clean=clean, noisy=noisy, fits=fits)
    return results


def summary_rows(config, results):
    """metrics_summary.csv's rows: per s the ground truth and the noisy input, then per reg the best and final outputs.

    One image per row, so the intervals of the edge measures come from resampling its edges in blocks
    of GAP * s rows (one kernel's height: neighbouring rows cross the same border); PSNR and SSIM have none.
    """
    rows = []
    for s, result in results.items():
        clean = result["clean"][None]  # (1, N, N)
        # The references as in the U-net's summary: named in the reg column (no kind, no iteration).
        outputs = [("", metrics.GROUND_TRUTH, "", result["clean"]), ("", metrics.NOISY_INPUT, "", result["noisy"])]
        for reg, fit_result in result["fits"].items():
            iterations = dict(best=fit_result["best_iteration"], final=config.iterations)
            outputs += [(kind, reg, iterations[kind], fit_result[kind]) for kind in KINDS]
        for kind, reg, iteration, image in outputs:
            row = metrics.set_summary(image[None], clean, s, seed=config.seed, row_block=metrics.GAP * s)
            rows.append(dict(scaling=s, reg=reg, kind=kind, iteration=iteration, **row))
    return rows


def write_summary(path, rows):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(SUMMARY_COLUMNS)
        for row in rows:
            writer.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in SUMMARY_COLUMNS])


def write_arrays(folder, config, results):
    """arrays/input.npz (the fixed input at the base resolution) and per s scaling{s}.npz."""
    folder.mkdir(exist_ok=True)
    np.savez(folder / "input.npz", input=base_input(config)[0].numpy())  # (C, size_orig, size_orig)
    for s, result in results.items():
        per_reg = {}
        for reg, fit_result in result["fits"].items():
            names = {"best": "best", "final": "final", "best_iteration": "best_iteration", "psnrs": "psnr"}
            per_reg.update({f"{name}_reg{reg:g}": fit_result[key] for key, name in names.items()})
        np.savez(folder / f"scaling{s}.npz", noisy=result["noisy"], ground_truth=result["clean"], **per_reg)


def caption(config, results):
    """The figures' small print: which image, network and fitting made them."""
    c = config
    best = ", ".join(f"s={s} reg={reg:g}: {f['best_iteration']}"
                     for s, r in results.items() for reg, f in r["fits"].items())
    return "\n".join([
        f"image: modified Shepp-Logan phantom at {c.size_orig} * s px, noise sigma {c.sigma_noise:.4g} per pixel"
        + (", clipped to [0, 1]" if c.clip else "")
        + f", seed {c.data_seed} (one draw per s); cut at height y = {c.cut_height}",
        f"network: consistent U-net, width {c.width}, depth {c.depth}, kernels 3s, convs / s^2; "
        f"input {c.input_channels} channels, uniform [0, {c.input_scale})",
        f"  at {c.size_orig} px repeated over s x s blocks, perturbed by Gaussian noise of std {c.input_noise:.4g} "
        "every iteration",
        f"fit: Adam lr {c.lr}, weight decay reg / s^2, {c.iterations} iterations, output = exponential average {c.ema} "
        f"of the iterates, seed {c.seed}",
        f"best iterations (by PSNR against the ground truth): {best}",
    ])


def figures(config, preset, results, rows, folder):
    """comparison_best.png, comparison_final.png (one row per reg, noisy and truth at the first s) and psnr.png."""
    scalings = list(results)
    regs = [reg for reg in config.weight_decays if all(reg in results[s]["fits"] for s in scalings)]
    if not regs:
        print("no weight decay is fitted at every s yet: no figures")
        return
    small_print = caption(config, results)
    s0 = scalings[0]
    row_of = {s: cut_row(config, config.size_orig * s) for s in scalings}
    repeat = len(regs)
    for kind in KINDS:
        truth = {s: [results[s]["clean"]] * repeat for s in scalings}
        columns = [(f"noisy input, s = {s0}", [results[s0]["noisy"]] * repeat, [row_of[s0]] * repeat, truth[s0]),
                   (f"ground truth, s = {s0}", truth[s0], [row_of[s0]] * repeat, None)]
        outputs = {s: [results[s]["fits"][reg][kind] for reg in regs] for s in scalings}
        columns += [(f"DIP, s = {s}", outputs[s], [row_of[s]] * repeat, truth[s]) for s in scalings]
        when = "iteration of best PSNR" if kind == "best" else "last iteration"
        title = f"Deep image prior outputs at the {when}, preset {preset}"
        plotting.comparison_figure(folder / f"comparison_{kind}.png", columns, title, small_print,
                                   row_labels=[f"reg = {reg:g}" for reg in regs])
    noisy_psnr = {row["scaling"]: row["psnr"] for row in rows if row["reg"] == metrics.NOISY_INPUT}
    fits = {(s, reg): results[s]["fits"][reg] for s in scalings for reg in regs}
    panels = {f"reg = {reg:g}": {f"s = {s}": (fits[s, reg]["psnrs"], fits[s, reg]["best_iteration"], noisy_psnr[s])
                                 for s in scalings} for reg in regs}
    title = f"Deep image prior: PSNR of the output against iteration, preset {preset}"
    plotting.psnr_figure(folder / "psnr.png", panels, title, small_print)


def evaluate(config, preset):
    """Every result file from the finished fits; returns metrics_summary.csv's rows."""
    folder = Path(config.output_dir)
    results = collect(config)
    missing = [f"s = {s}, reg = {reg:g}" for s in results for reg in config.weight_decays
               if reg not in results[s]["fits"]]
    if missing:
        print(f"not finished, left out of the results: {'; '.join(missing)}")
    rows = summary_rows(config, results)
    write_summary(folder / "metrics_summary.csv", rows)
    write_arrays(folder / "arrays", config, results)
    figures(config, preset, results, rows, folder)
    for row in rows:
        print(f"s = {row['scaling']} {row['kind']:>5} reg {row['reg']!s:>12} it {row['iteration']!s:>5}: jump ratio "
              f"{row['jump_ratio']:.3f} [{row['jump_ratio_low']:.3f}, {row['jump_ratio_high']:.3f}], rise width "
              f"{row['rise_width_phys']:.4f} [{row['rise_width_phys_low']:.4f}, {row['rise_width_phys_high']:.4f}] "
              f"of the width, PSNR {row['psnr']:.2f} dB")
    print(f"wrote metrics_summary.csv, arrays/ and the figures into {folder}")
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
        for scaling in config.scalings:  # a foreign or corrupt state stops the run before it starts
            for reg in config.weight_decays:
                if args.fresh:
                    for suffix in (".state.pt", ".csv", ".json"):
                        fit_path(config, scaling, reg, suffix).unlink(missing_ok=True)
                else:
                    read_state(config, scaling, reg, mmap=True)
    except (ConfigError, CheckpointError) as err:
        fail(err)
    amp_advice(config.amp, device, PROG)
    (Path(config.output_dir) / "fits").mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with stop_on_signals() as stop:
        for scaling in config.scalings:
            for reg in config.weight_decays:
                signum = stop.signum or fit(config, scaling, reg, device, stop)
                if signum:
                    sys.exit(128 + signum)
    print(f"fits done in {time.perf_counter() - tic:.0f} s")
    evaluate(config, args.preset)


if __name__ == "__main__":
    main()
