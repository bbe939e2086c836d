"""Train the discretisation-consistent U-net of Habring & Holler on random circles.

The same network is trained at resolution factors s = 1, 2, 3 (images size_orig * s wide, kernels
3s wide) and several weight decays; Adam gets weight_decay = reg / s^2. Hyperparameters stand in
the Config block below (the paper's values). A named preset (PRESETS, just below the block) replaces
some of them, and every one can be overridden on the command line: Config < preset < flags.

    python unet_circles.py --preset quick
    python unet_circles.py --scalings 3 --weight-decays 1e-3      # exactly one model
    torchrun --standalone --nproc_per_node=4 unet_circles.py --scalings 2 --weight-decays 0

Per model (s, reg) the run folder gets the weights at every checkpoint epoch as a plain state dict
in the authors' naming (size_orig_128_scaling_1_weight_decay_0.001_n_epochs_40.pt), and, under the
same name without `_n_epochs_E`, a training state (.state.pt, the newest only: what a rerun resumes
from), a log (.csv) and the config (.json) that lets evaluate_unet.py rebuild the model (utils/runs.py).
"""

import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from models.trunks import UNet, zoom
from models.trunks.fft import fft_for_training, reuse_freed_memory
from utils.circles import noisy_pairs, sample_circles, split, test_pairs
from utils.config import ConfigError, Parser, add_config_flags, check_limits, check_writable, given_values, named_preset
from utils.device import DeviceError, amp_advice, autocast, pick_device
from utils.files import file_digest, write_text_atomic
from utils.metrics import edge_measures
from utils.progress import progress
from utils.runs import Model, ModelFiles, RunFolderError, read_config, weight_decay
from utils.seeds import generator, seed_of
from utils.stopping import stop_on_signals
from utils.weights import CheckpointError, load_checkpoint, load_state_dict, save_atomic

# ----------------------------------------------------------------------------------------------
# Hyperparameters: the paper's values. Edit here, pick a preset, or override with --flags.
# ----------------------------------------------------------------------------------------------
PAPER_WEIGHT_DECAYS = {  # reg values trained per scaling s, in the authors' order
    1: (0.0, 1e-3, 1e-2, 1e-1, 0.5, 0.75, 1.25),
    2: (1e-3, 1e-2, 1e-1, 0.0),
    3: (1e-2, 1e-1, 1e-3, 0.0),
}


@dataclass
class Config:
    # data
    size_orig: int = 128  # base resolution N in pixels at s = 1; images are size_orig * s wide
    n_samples: int = 10_000  # circle samples in the data set; the first 80% train, the last 20% test
    samples: int = 8_000  # training samples used per epoch (at most the 80% train split)
    test_samples: int = 256  # held-out test samples (fixed noise) for the test loss after every epoch
    sigma_noise: float = 0.07  # std of the Gaussian noise added to the input, fresh every epoch
    data_seed: int = 0  # seed of the circle parameters (the data set) and of the test noise
    # model
    width: int = 64  # channels after the first DoubleConv
    depth: int = 4  # number of down-steps; size_orig must be divisible by 2^depth
    # training
    scalings: tuple[int, ...] = (1, 2, 3)  # resolution factors s to train, each >= 1
    weight_decays: dict = field(default_factory=PAPER_WEIGHT_DECAYS.copy)  # reg values per s (Adam: reg / s^2); the flag: one list, all s  # noqa: E501
    epochs: int = 40  # passes over the training samples
    batch_size: int = 32  # images per optimizer step (summed over all processes)
    lr: float = 1e-3  # Adam learning rate
    lr_schedule: Literal["constant", "cosine"] = "constant"  # constant (the paper) or cosine decay to 0
    warm_start: bool = False  # each reg starts from the previous reg's final weights, as the authors' loop did
    init: Literal["scratch", "zoom"] = "scratch"  # scratch: a seeded random init; zoom: each s = k > 1 model starts from the run's finished s = 1 model of its reg and seed, zoomed to k  # noqa: E501
    min_improvement: float = 0.0  # stop a model once its best test loss improved by less than this fraction over the last quarter of its epochs (from epoch 4; 0: always all epochs)  # noqa: E501
    bn_recalibration: int = 0  # after training, re-estimate BatchNorm statistics on this many batches (0: off)
    checkpoint_every: int = 5  # write a checkpoint every this many epochs (and at the end)
    seeds: tuple[int, ...] = (0,)  # training seeds (init, batch order, noise): each (s, reg) is trained once per seed
    out_dir: str = "data/weights/paper"  # where checkpoints and logs go
    # speed (the defaults are the paper's float32)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda if available, else mps, else cpu
    amp: bool = False  # bfloat16 autocast: faster on GPUs, far slower on CPUs without native bfloat16 (AVX2)
    channels_last: bool = False  # channels-last memory format for the network and its inputs
    fft: bool = False  # on a CPU, the convolutions with kernels 6 x 6 and up (s >= 2) by FFT: same function, faster
    compile: bool = False  # torch.compile the network (the first steps are slow while it compiles)


QUICK_NETWORK = dict(size_orig=32, samples=2_000, width=16, depth=1, channels_last=True, fft=True)
PRESETS = {
    "paper": {},  # the authors' values (docs/paper.md), as above
    "quick": dict(  # the paper's method scaled down to run on a laptop CPU; see README, "The quick preset"
        **QUICK_NETWORK,
        weight_decays={1: (0.0, 1e-3, 1e-2, 1e-1, 0.5, 1.25), 2: (0.0, 1e-3), 3: (0.0, 1e-3)},
        epochs=20,
        lr=3e-3,
        lr_schedule="cosine",
        bn_recalibration=20,
        out_dir="data/weights/quick",
    ),
    "study": dict(  # the quick preset over seeds and zoom starts (docs/results/study/; its commands set the epochs)
        **QUICK_NETWORK,
        weight_decays={s: (0.0, 1e-3, 1e-2) for s in (1, 2, 3)},
        seeds=(0, 1, 2),
        epochs=20,
        lr=3e-3,
        lr_schedule="cosine",
        bn_recalibration=20,
        out_dir="data/weights/study",
    ),
}


def preset_config(name):
    """The Config of a named preset."""
    return Config(**PRESETS[name])


def full_size(net):
    """Whether a Config or a trained model (utils.runs.Model) is the paper's full-size network: slow on a CPU."""
    paper = preset_config("paper")
    return (net.size_orig, net.width, net.depth) == (paper.size_orig, paper.width, paper.depth)


# Fields that may differ between a checkpoint and the command that resumes it: they pick which
# models run and where, or only change speed. Every other field changes the trained weights.
RESUMABLE_CHANGES = ("scalings", "weight_decays", "seeds", "checkpoint_every", "out_dir", "test_samples", "device",
                     "channels_last", "compile", "fft")
DEFAULTS = asdict(Config())
PROG = "unet_circles.py"
# What --amp gained in training on a 2-core AVX512-BF16 CPU (benchmarks/run.py; README, Performance): said on such
# CPUs when --amp is off. float32 stays the default, as in the paper.
AMP_GAIN = ("--amp (bfloat16 autocast) trained 1.2-2x faster than float32 on such a CPU (README, Performance), "
            "at bfloat16's precision; float32 is the paper's")

# ----------------------------------------------------------------------------------------------
# Command line: one flag per Config field, its help the field's comment above.
# ----------------------------------------------------------------------------------------------


def build_parser(preset="paper"):
    """The command line; --help shows the values of `preset` (the one named on the command line)."""
    parser = Parser(
        prog=PROG,
        description="Train the U-net of Habring & Holler on random circles. Where values come from: the Config "
        f"block at the top of {PROG} (the paper's), replaced by the chosen preset's (PRESETS, below the block: "
        "a preset wins over an edit of the block), replaced by flags. A rerun resumes every model from its state.",
        epilog=f"[values shown: preset {preset}; give --preset NAME --help for another]",
    )
    changed = {name: ", ".join(values) or "nothing" for name, values in PRESETS.items()}
    parser.add_argument("--preset", choices=list(PRESETS), default="paper",
                        help="named set of values: " + "; ".join(f"{n} changes {c}" for n, c in changed.items()))
    parser.add_argument("--fresh", action="store_true",
                        help="start every chosen model over, deleting its old checkpoints and log")
    shown = preset_config(preset)
    table = "; ".join(f"s = {s}: {' '.join(map(str, regs))}" for s, regs in sorted(shown.weight_decays.items()))
    special = dict(weight_decays=(dict(nargs="+", type=float, metavar="REG"), table))
    add_config_flags(parser, Config, shown, preset, special, names=dict(out_dir=("--output-dir", "--out-dir")))
    return parser


def parse_args(argv=None):
    """The command line, parsed by a parser whose --help shows the values of the preset it names."""
    return build_parser(named_preset(argv, PRESETS)).parse_args(argv)


def config_from_args(args):
    """Config defaults < preset < command line; weight_decays ends up holding exactly the chosen scalings."""
    given = given_values(args, Config)
    values = {**PRESETS[args.preset], **given}
    values["scalings"] = tuple(values.get("scalings", Config.scalings))
    if "weight_decays" in given:
        values["weight_decays"] = {s: tuple(given["weight_decays"]) for s in values["scalings"]}
    else:
        table = values.get("weight_decays", PAPER_WEIGHT_DECAYS)
        values["weight_decays"] = {s: tuple(table.get(s, ())) for s in values["scalings"]}
    return Config(**values)


def train_command(config_paths, output_dir):
    """The command line that trains the models of these configs (.json, as announce writes them) into output_dir:
    per run (the configs that share every value that changes the weights, --init and --epochs included) the preset
    closest to its values, a flag for each value that differs from it, and --scalings, --weight-decays and --seeds
    where the preset's do not name its models. Runs from scratch come first: a zoom start needs their s = 1 models."""
    runs = {}  # the configs of one run, keyed by its values
    for record in map(read_config, config_paths):
        values = {name: record.get(name, DEFAULTS[name]) for name in DEFAULTS if name not in RESUMABLE_CHANGES}
        runs.setdefault(json.dumps(values, sort_keys=True), []).append(record)
    ordered = sorted(runs.values(), key=lambda records: records[0].get("init", "scratch") != "scratch")
    return "; python ".join(_run_command(records, output_dir) for records in ordered)


def _run_command(records, output_dir):
    """train_command for the configs of one run."""
    def differing(preset):
        values = json.loads(json.dumps(asdict(preset_config(preset))))  # as a .json holds them
        record = dict(values, **records[0])  # a field newer than the run: the preset's value
        return [name for name in values if name not in RESUMABLE_CHANGES and record[name] != values[name]]

    preset = min(PRESETS, key=lambda name: len(differing(name)))
    flags = [f"--preset {preset}"]
    for name in differing(preset):
        value = records[0][name]  # differing: the record has it
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            flags.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    regs_of = {}  # (s, seed) -> the reg values trained
    for record in records:
        regs_of.setdefault((record["scaling"], record.get("seed", 0)), []).append(record["reg"])
    table = {}  # s -> {reg values: the seeds that trained exactly those at s}
    for (s, seed), regs in sorted(regs_of.items()):
        seeds = table.setdefault(s, {})
        seeds[tuple(sorted(regs))] = seeds.get(tuple(sorted(regs)), ()) + (seed,)
    shown = preset_config(preset)
    if table == {s: {tuple(sorted(regs)): tuple(sorted(shown.seeds))} for s, regs in shown.weight_decays.items()}:
        return f"{PROG} {' '.join(flags)} --output-dir {output_dir}"  # the preset's models
    scalings_of = {}  # (reg values, seeds) -> the scalings that trained those: one command each
    for s, pairs in table.items():
        for pair in pairs.items():
            scalings_of.setdefault(pair, []).append(s)
    commands = []
    for (regs, seeds), scalings in scalings_of.items():
        seeds_flag = "" if seeds == tuple(sorted(shown.seeds)) else f"--seeds {' '.join(map(str, seeds))} "
        commands.append(f"{PROG} {' '.join(flags)} --scalings {' '.join(map(str, scalings))} --weight-decays "
                        f"{' '.join(map(str, regs))} {seeds_flag}--output-dir {output_dir}")
    return "; python ".join(commands)


def check_config(config, world_size=1):
    """Raise ConfigError for a value that cannot train; nothing is written before this passes."""
    c = config
    n_train = len(split(np.empty(c.n_samples))[0])
    n_test = c.n_samples - n_train
    all_regs = [reg for regs in c.weight_decays.values() for reg in regs]
    missing = [str(s) for s, regs in c.weight_decays.items() if not regs]
    limits = [  # (holds, the sentence if it does not)
        (c.lr >= 0, f"--lr must be >= 0, got {c.lr}"),
        (len(c.seeds) > 0, "--seeds needs at least one seed"),
        (len(set(c.seeds)) == len(c.seeds), f"--seeds lists a seed twice: {' '.join(map(str, c.seeds))}"),
        (min(c.seeds, default=0) >= 0, f"seeds must be >= 0, got --seeds {' '.join(map(str, c.seeds))}"),
        (not (c.warm_start and c.init == "zoom"), "--warm-start and --init zoom both choose the start: give one"),
        (0 <= c.min_improvement < 1, f"--min-improvement must be 0 to below 1 (a fraction), got {c.min_improvement}"),
        (min(all_regs, default=0) >= 0, f"weight decays must be >= 0, got {' '.join(map(str, all_regs))}"),
        (
            all(s >= 1 for s in c.scalings),
            f"every scaling must be >= 1, got --scalings {' '.join(map(str, c.scalings))}",
        ),
        (
            not missing,
            f"the preset has no weight decays for scaling {' '.join(missing)}; give them with --weight-decays",
        ),
        (c.epochs >= 1, f"--epochs must be >= 1, got {c.epochs}"),
        (c.batch_size >= 1, f"--batch-size must be >= 1, got {c.batch_size}"),
        (c.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {c.checkpoint_every}"),
        (c.size_orig >= 1, f"--size-orig must be >= 1, got {c.size_orig}"),
        (c.width >= 2 and c.depth >= 1, f"--width must be >= 2 and --depth >= 1, got {c.width} and {c.depth}"),
        (c.sigma_noise >= 0, f"--sigma-noise must be >= 0, got {c.sigma_noise}"),
        (c.bn_recalibration >= 0, f"--bn-recalibration must be >= 0, got {c.bn_recalibration}"),
        (0 < c.samples <= n_train, f"--samples must be 1 to {n_train} (the training split), got {c.samples}"),
        (0 < c.test_samples <= n_test, f"--test-samples must be 1 to {n_test} (the test split), got {c.test_samples}"),
        (
            c.samples >= c.batch_size,
            f"--samples {c.samples} is below --batch-size {c.batch_size}: an epoch has no step",
        ),
        (c.size_orig % 2**c.depth == 0, f"--size-orig {c.size_orig} must be divisible by 2^depth = {2**c.depth}"),
        (
            c.batch_size % world_size == 0,
            f"--batch-size {c.batch_size} does not split evenly over {world_size} processes",
        ),
    ]
    check_limits(limits)
    device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    if world_size > 1 and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"torchrun needs --device cpu or cuda, got {device.type}")
    check_writable(config.out_dir, "--output-dir")
    return device


# ----------------------------------------------------------------------------------------------
# The run folder (utils/runs.py): per model the authors' weights names, a training state, a log, a config.
# ----------------------------------------------------------------------------------------------


def model_init(config, scaling):
    """How the model at this scaling starts: zoomed to 1 an s = 1 model is itself, so s = 1 starts from scratch."""
    return config.init if scaling > 1 else "scratch"


def model_files(config, scaling, reg, seed=0):
    return ModelFiles(Path(config.out_dir), config.size_orig, scaling, reg, config.epochs, seed,
                      model_init(config, scaling))


def config_record(config, scaling, reg, seed=0):
    """One model's config as its .json and training state hold it: every Config value, its scaling, reg, seed and
    init."""
    return dict(asdict(config), scaling=scaling, reg=reg, seed=seed, init=model_init(config, scaling))


def models(config):
    """(scaling, reg, seed, reg before it) in training order: seed by seed, and s = 1 first where the others start
    from its zoom; the previous reg is what --warm-start continues."""
    scalings = sorted(config.scalings) if config.init == "zoom" else config.scalings
    for seed in config.seeds:
        for s in scalings:
            regs = config.weight_decays[s]
            for i, reg in enumerate(regs):
                yield s, reg, seed, regs[i - 1] if i else None


def zoom_source(config, reg, seed):
    """The final weights of the run's s = 1 model of this reg and seed, where a zoom start (--init zoom) begins;
    ConfigError where that model is missing, unfinished or of another shape."""
    files = model_files(config, 1, reg, seed)
    how = "train it first (add 1 to --scalings and reg to its --weight-decays) or use --init scratch"
    if not files.config.is_file():
        raise ConfigError(f"--init zoom needs the s = 1 model of reg {reg}, seed {seed} in {config.out_dir}, and "
                          f"{files.config.name} is not there; {how}")
    values = read_config(files.config)
    other = [f"{name} {values[name]} (this run: {getattr(config, name)})" for name in ("width", "depth", "size_orig")
             if values[name] != getattr(config, name)]
    if other:
        raise ConfigError(f"--init zoom: the s = 1 model {files.config} has {', '.join(other)}; a zoom start needs "
                          "the same network: use its values or another --output-dir")
    weights = Model.from_values(config.out_dir, values, str(files.config)).files.weights()
    if not weights.is_file():
        raise ConfigError(f"--init zoom needs the finished s = 1 model of reg {reg}, seed {seed}, and {weights} is not "
                          f"there; {how}")
    return weights


def check_zoom_sources(config):
    """Before anything is written: every zoom start's s = 1 model is in the folder or is trained first in this run."""
    planned = {(reg, seed) for s, reg, seed, _ in models(config) if s == 1}
    for scaling, reg, seed, _ in models(config):
        if model_init(config, scaling) == "zoom" and (reg, seed) not in planned:
            zoom_source(config, reg, seed)


def zoomed_state(config, path, scaling):
    """The state dict of the s = 1 model at path zoomed to `scaling` (models/trunks/zoom.py).

    Every zoom variant has UNet(scaling)'s state dict, and the trained network is the paper's UNet(scaling),
    so a zoom start computes the plain variant (MaxPool(2), the authors' crops: pooling="pixels", centre=False).
    """
    s1 = UNet(1, config.width, config.depth)
    load_state_dict(s1, path)
    return zoom(s1, scaling, pooling="pixels", centre=False).state_dict()


LOG_COLUMNS = ("epoch", "train_loss", "test_loss", "jump_ratio", "rise_width_px", "weight_norm2", "seconds",
               "images_per_s")


def check_same_config(path, saved, config, scaling, reg, seed):
    """ConfigError unless the config saved at path (a training state's or a .json's) trained what this command
    would: every field that changes the weights equal."""
    for name, value in config_record(config, scaling, reg, seed).items():
        # A field a saved config lacks came later than it, and the model was trained with the field's default.
        before = saved.get(name, DEFAULTS.get(name))
        if name not in RESUMABLE_CHANGES and before != value:
            raise ConfigError(f"checkpoint {path} was trained with {name} = {before!r}, "
                              f"this command has {value!r}; use --fresh to start over or another --output-dir")


@dataclass
class TrainingState:
    """Where one model's training stands, what a rerun resumes from: saved whole, atomically, as .state.pt."""

    epochs_done: int = 0
    steps_done: int = 0  # steps of the next epoch already taken (a stop mid-epoch)
    loss_sum: float = 0.0  # their summed training loss
    seconds: float = 0.0  # their training time
    history: list = field(default_factory=list)  # the log's rows, one per finished epoch (and epoch 0 of a zoom start)
    stopping: str = ""  # how training ended (STOPPINGS); "" while it goes on
    model: dict = None  # the network's state dict
    optimizer: dict = None  # Adam's state dict

    def finished(self, config):
        return bool(self.stopping) or self.epochs_done == config.epochs

    @classmethod
    def read(cls, config, scaling, reg, seed, mmap=False):
        """The model's saved state, or a fresh one; a state of another config is a ConfigError."""
        files = model_files(config, scaling, reg, seed)
        if not files.state.exists():
            record = read_config(files.config) if files.config.is_file() else {}
            if "final_epoch" in record and files.weights(record["final_epoch"]).is_file():
                # A finished model kept without its training state (data/weights/study/): its .json says so.
                check_same_config(files.config, record, config, scaling, reg, seed)
                return cls(epochs_done=record["final_epoch"], stopping=record["stopping"])
            if files.weights().exists():  # not this trainer's (a download?): never overwrite it unasked
                raise ConfigError(f"{files.weights()} exists without the training state {files.state.name} next to it; "
                                  "use --fresh to overwrite it or another --output-dir")
            return cls()
        saved = load_checkpoint(files.state, mmap=mmap)
        check_same_config(files.state, saved["config"], config, scaling, reg, seed)
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    def save(self, config, scaling, reg, seed, net, optimizer, weights):
        """The state a rerun resumes from, and at epoch ends (weights=True) the weights in the authors' naming."""
        files = model_files(config, scaling, reg, seed)
        self.model = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        self.optimizer = optimizer.state_dict()
        if weights:
            save_atomic(self.model, files.weights(self.epochs_done))
        save_atomic(dict(asdict(self), config=config_record(config, scaling, reg, seed)), files.state)
        self.model = self.optimizer = None  # the live network and optimizer hold them

    def write_log(self, path):
        """The per-epoch log as CSV, rewritten whole so it always matches the state."""
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(LOG_COLUMNS))
        writer.writeheader()
        writer.writerows(self.history)
        write_text_atomic(path, text.getvalue())


# ----------------------------------------------------------------------------------------------
# Data: circle parameters, rasterised per batch with fresh noise; a fixed noisy test set.
# ----------------------------------------------------------------------------------------------


def load_data(config, device):
    """Training circle parameters (samples, 5, 4) float64 on the device, and the test split's first test_samples.

    The images are rasterised per batch on the device from the parameters; the test set's noise is
    drawn once on the CPU so its test loss is the same set on every device.
    """
    train, test = split(sample_circles(config.n_samples, seed=config.data_seed))
    # MPS has no float64, which the rasteriser's exact floors need; there the CPU rasterises.
    data_device = torch.device("cpu") if device.type == "mps" else device
    return torch.from_numpy(train[: config.samples]).to(data_device), torch.from_numpy(test[: config.test_samples])


def test_set(config, test_params, scaling, device):
    """The fixed noisy test images and their truth (T, 1, N, N); the evaluator draws the same (evaluate_unet.py)."""
    noisy, clean = test_pairs(test_params, config.size_orig * scaling, config.sigma_noise, config.data_seed)
    return noisy.to(device), clean.to(device)


def batch(config, params, index, size, noise_seed, device):
    """Noisy input and clean target (B, 1, N, N) of the parameters at index, on the device."""
    noisy, clean = noisy_pairs(params[index], size, generator(params.device, noise_seed), config.sigma_noise)
    noisy, clean = noisy.to(device), clean.to(device)
    if config.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    return noisy, clean


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def dist_world():
    """Processes started by torchrun (WORLD_SIZE), 1 without it."""
    return int(os.environ.get("WORLD_SIZE", 1))


def dist_rank():
    return int(os.environ.get("RANK", 0))


def stopped(stop, device):
    """The signal any process received, or 0; all processes agree, so all stop after the same step."""
    if dist_world() == 1:
        return stop.signum
    signum = torch.tensor([stop.signum], device=device)
    dist.all_reduce(signum, op=dist.ReduceOp.MAX)
    return int(signum.item())


def train_step(config, model, optimizer, noisy, clean, device):
    """One optimizer step on the mean squared error; returns the detached loss."""
    with autocast(config.amp, device):
        prediction = model(noisy)
    loss = F.mse_loss(prediction.float(), clean)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def learning_rate(config, step, total_steps):
    """The learning rate of global step `step`: constant (the paper) or cosine decay to 0."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    return config.lr


@torch.inference_mode()
def test_metrics(config, net, test, scaling, device):
    """Mean squared error on the fixed noisy test set (BatchNorm in eval mode), and the medians over
    its edges of the jump ratio and rise width (utils.metrics), so the log shows how sharp edges get."""
    noisy, clean = test
    net.eval()
    total, widths, ratios = 0.0, [], []
    for i in range(0, len(noisy), config.batch_size):
        x, truth = noisy[i : i + config.batch_size], clean[i : i + config.batch_size]
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(config.amp, device):
            prediction = net(x).float()
        total += F.mse_loss(prediction, truth, reduction="sum").item()
        for output, target in zip(prediction[:, 0].cpu().numpy(), truth[:, 0].cpu().numpy(), strict=True):
            width, ratio = edge_measures(output, target, scaling)
            widths.append(width)
            ratios.append(ratio)
    net.train()
    widths, ratios = np.concatenate(widths), np.concatenate(ratios)
    return dict(test_loss=total / clean.numel(), jump_ratio=float(np.median(ratios)) if len(ratios) else math.nan,
                rise_width_px=float(np.median(widths)) if len(widths) else math.nan)


def weight_norm2(net):
    """The squared L2 norm of what weight decay acts on: every parameter Adam updates (convs and BatchNorms)."""
    return sum(float(p.detach().double().square().sum()) for p in net.parameters())


def recalibrate_bn(config, seed, net, params, size, device):
    """Re-estimate BatchNorm running statistics as plain averages over fresh training batches.

    During training they are a running average over weights that kept changing; the final
    weights' own statistics fit the evaluation better. Every process uses the same global
    batches, so all end with the same statistics.
    """
    order = generator("cpu", seed_of("bn", seed))

    def inputs():
        for i in range(config.bn_recalibration):
            index = torch.randint(len(params), (config.batch_size,), generator=order).to(params.device)
            yield batch(config, params, index, size, seed_of("bn", seed, i + 1), device)[0]

    with autocast(config.amp, device):
        torch.optim.swa_utils.update_bn(inputs(), net)


def checksum(net):
    """sha256 of every tensor of the state dict: equal on all processes or DDP went wrong."""
    digest = hashlib.sha256()
    for value in net.state_dict().values():
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class ModelRun:
    """One model (scaling, reg, seed) in training: what every step needs."""

    config: Config
    scaling: int
    reg: float
    seed: int
    params: torch.Tensor  # the training circle parameters (samples, 5, 4)
    device: torch.device
    net: UNet = None
    optimizer: torch.optim.Optimizer = None
    step: torch.nn.Module = None  # what runs a step: the net, or the net wrapped by DDP / torch.compile

    @property
    def name(self):
        init = " zoom" if model_init(self.config, self.scaling) == "zoom" else ""
        return f"s={self.scaling} reg={self.reg}{init}" + (f" seed={self.seed}" if len(self.config.seeds) > 1 else "")

    @property
    def files(self):
        return model_files(self.config, self.scaling, self.reg, self.seed)

    @property
    def steps(self):
        return len(self.params) // self.config.batch_size  # an incomplete last batch is dropped; 8,000 / 32 has none

    def build(self, previous_reg, state):
        """The network and its Adam from the state, the previous reg's weights (--warm-start), the zoomed s = 1 model
        (--init zoom) or a seeded init; returns how it started: a sentence, and the zoom's source with its sha256."""
        config = self.config
        torch.manual_seed(seed_of("init", self.seed))
        self.net = UNet(self.scaling, config.width, config.depth)
        source = {}
        if state.model is not None:
            self.net.load_state_dict(state.model)
            start = f"resuming at epoch {state.epochs_done + 1}, step {state.steps_done}"
        elif config.warm_start and previous_reg is not None:
            previous = model_files(config, self.scaling, previous_reg, self.seed).weights()
            load_state_dict(self.net, previous)
            start = f"warm start from {previous}"
        elif model_init(config, self.scaling) == "zoom":
            path = zoom_source(config, self.reg, self.seed)
            self.net.load_state_dict(zoomed_state(config, path, self.scaling))
            source = dict(init_source=path.name, init_source_sha256=file_digest(path))  # a file of the same folder
            start = f"zoomed from {path.name}"
        else:
            start = "fresh init"
        if config.fft and self.device.type == "cpu":  # the same parameters and state dict, computed by FFT
            fft_for_training(self.net)
        self.net.to(self.device)
        if config.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=config.lr, weight_decay=weight_decay(self.reg, self.scaling)
        )
        if state.optimizer is not None:
            self.optimizer.load_state_dict(state.optimizer)
        state.model = state.optimizer = None  # from here on the live network and optimizer hold them
        self.step = self.net
        if dist_world() > 1:
            # Plain per-process BatchNorm: each process normalises its own share of the batch, and
            # DDP copies process 0's running statistics to all before every forward pass.
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if config.compile:
            self.step = torch.compile(self.step)
        return start, source

    def save(self, state, weights):
        if dist_rank() == 0:
            state.save(self.config, self.scaling, self.reg, self.seed, self.net, self.optimizer, weights)


def train_epoch(run, epoch, state, stop):
    """The steps of one epoch from state.steps_done on; returns (signal number or 0, images/s).

    state.steps_done, loss_sum and seconds are updated at the end, or where a signal stops the
    epoch, so they are ready to save.
    """
    config, rank, world = run.config, dist_rank(), dist_world()
    share = config.batch_size // world  # this process's images of every batch
    order = torch.randperm(len(run.params), generator=generator("cpu", seed_of("order", run.seed, epoch)))
    order = order.to(run.params.device)
    running = torch.tensor(state.loss_sum, dtype=torch.float64, device=run.device)  # on the device: no sync a step
    tic, images, signum, step = time.perf_counter(), 0, 0, state.steps_done - 1
    bar = progress(total=run.steps, initial=state.steps_done, desc=f"{run.name} epoch {epoch}/{config.epochs}",
                   unit="step", disable=rank != 0, leave=False)
    for step in range(state.steps_done, run.steps):
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(config, (epoch - 1) * run.steps + step, config.epochs * run.steps)
        first = step * config.batch_size + rank * share
        noisy, clean = batch(config, run.params, order[first : first + share], config.size_orig * run.scaling,
                             seed_of("noise", run.seed, epoch, step, rank), run.device)
        step_loss = train_step(config, run.step, run.optimizer, noisy, clean, run.device).double()
        if world > 1:  # the whole batch's loss
            dist.all_reduce(step_loss)
            step_loss /= world
        running += step_loss
        images += config.batch_size
        bar.update()
        if step % 10 == 0 or step == run.steps - 1:
            bar.set_postfix(loss=f"{step_loss.item():.4g}", img_s=f"{images / (time.perf_counter() - tic):.1f}")
        signum = stopped(stop, run.device)
        if signum:
            break
    bar.close()
    elapsed = time.perf_counter() - tic
    state.steps_done, state.loss_sum, state.seconds = step + 1, running.item(), state.seconds + elapsed
    return signum, images / elapsed


# How a model's training ended, as its .json and training state record it.
STOPPINGS = {
    "rule": "the stopping rule held (--min-improvement)",
    "cap": "its last epoch came before the stopping rule held",
    "epochs": "all its epochs, without a stopping rule",
}


def last_quarter_gain(test_losses):
    """How much the best test loss of the last quarter of the epochs improved on the best before it, as a fraction
    of that (negative where it got worse); nan before epoch 4, where a quarter would hold no epoch."""
    n = len(test_losses)
    if n < 4:
        return math.nan
    before = min(test_losses[: n - n // 4])
    return (before - min(test_losses[n - n // 4 :])) / before


def converged(test_losses, min_improvement):
    """The stopping rule: the last quarter's gain (last_quarter_gain) is below min_improvement; never where
    min_improvement is 0."""
    return min_improvement > 0 and last_quarter_gain(test_losses) < min_improvement


def stopping(config, history, epoch):
    """How training ends after `epoch` (a key of STOPPINGS), or "" if it goes on."""
    if converged([row["test_loss"] for row in history if row["epoch"] >= 1], config.min_improvement):
        return "rule"
    if epoch == config.epochs:
        return "cap" if config.min_improvement > 0 else "epochs"
    return ""


def log_row(run, state, test, epoch, train_loss, images_per_s):
    """One row of the model's log: the test set's measures with the network as it is now (rank 0 only)."""
    row = dict(
        epoch=epoch,
        train_loss=train_loss,
        **test_metrics(run.config, run.net, test, run.scaling, run.device),
        weight_norm2=weight_norm2(run.net),
        seconds=round(state.seconds, 3),
        images_per_s=round(images_per_s, 2),
    )
    state.history.append(row)
    state.write_log(run.files.log)
    return row


def end_epoch(run, epoch, state, test, images_per_s):
    """After an epoch's last step: BatchNorm recalibration (after the last epoch, or after every one where the
    stopping rule may make it the last), the log row and line; returns whether training has finished."""
    config = run.config
    if config.bn_recalibration and (epoch == config.epochs or config.min_improvement > 0):
        recalibrate_bn(config, run.seed, run.net, run.params, config.size_orig * run.scaling, run.device)
    if dist_rank() == 0:
        train_loss = state.loss_sum / run.steps
        row = log_row(run, state, test, epoch, train_loss, images_per_s)
        print(f"{run.name} epoch {epoch}: train loss {train_loss:.6f}, test loss {row['test_loss']:.6f}, jump ratio "
              f"{row['jump_ratio']:.3f}, {row['images_per_s']:.1f} img/s, {state.seconds:.1f} s", flush=True)
        state.stopping = stopping(config, state.history, epoch)
    if dist_world() > 1:  # only process 0 measures the test set: its verdict for all
        verdict = [state.stopping]
        dist.broadcast_object_list(verdict, src=0)
        state.stopping = verdict[0]
    state.epochs_done, state.steps_done, state.loss_sum, state.seconds = epoch, 0, 0.0, 0.0
    run.save(state, weights=epoch % config.checkpoint_every == 0 or bool(state.stopping))
    return bool(state.stopping)


def announce(run, start, source, state):
    """The model's first line, and at a fresh start its config (.json: what the evaluator rebuilds it from) with
    where a zoom start came from."""
    if dist_rank() != 0:
        return
    config, world = run.config, dist_world()
    size, n_params = config.size_orig * run.scaling, sum(p.numel() for p in run.net.parameters())
    print(
        f"{run.name}: {n_params:,} parameters, {size}x{size} px, "
        f"Adam weight decay {weight_decay(run.reg, run.scaling)}, "
        f"{start}, on {run.device}" + (f" x {world} processes" if world > 1 else ""),
        flush=True,
    )
    if not state.epochs_done and not state.steps_done:
        record = dict(config_record(config, run.scaling, run.reg, run.seed), start=start, **source, world_size=world)
        write_text_atomic(run.files.config, json.dumps(record, indent=2) + "\n")


def record_end(run, state):
    """The finished model's final epoch and how it stopped, added to its .json (the evaluator reads both)."""
    path = run.files.config
    record = json.loads(path.read_text()) if path.is_file() else config_record(run.config, run.scaling, run.reg,
                                                                                 run.seed)
    record.update(final_epoch=state.epochs_done, stopping=state.stopping)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def check_replicas(run):
    """After DDP: process 0's BatchNorm statistics everywhere, and the same weights on every process."""
    for buffer in run.net.buffers():
        dist.broadcast(buffer, 0)
    sums = [None] * dist_world()
    dist.all_gather_object(sums, checksum(run.net))
    if len(set(sums)) != 1:
        raise RuntimeError(f"{run.name}: the processes ended with different weights: {sums}")
    if dist_rank() == 0:
        print(f"{run.name}: weights identical on all {dist_world()} processes (sha256 {sums[0]})")


def train_model(config, scaling, reg, seed, previous_reg, data, device, stop):
    """Train one model (scaling, reg, seed), resuming from its training state; returns a signal number or 0."""
    train_params, test_params = data
    run = ModelRun(config, scaling, reg, seed, train_params, device)
    state = TrainingState.read(config, scaling, reg, seed)
    if state.finished(config):  # earlier
        final = run.files.weights(state.epochs_done)
        if dist_rank() == 0 and not final.exists():  # deleted since: the state holds the same weights
            save_atomic(state.model, final)
            print(f"{run.name}: already trained; {final} rewritten from {run.files.state.name}")
        elif dist_rank() == 0:
            print(f"{run.name}: already trained, {final}")
        return 0
    start, source = run.build(previous_reg, state)
    announce(run, start, source, state)
    test = test_set(config, test_params, scaling, device)
    if source and not state.history and dist_rank() == 0:  # epoch 0 of a zoom start: the zoomed network itself
        log_row(run, state, test, 0, math.nan, math.nan)
    run.net.train()
    for epoch in range(state.epochs_done + 1, config.epochs + 1):
        signum, images_per_s = train_epoch(run, epoch, state, stop)
        if signum:
            run.save(state, weights=False)
            if dist_rank() == 0:
                print(f"{run.name}: stopped in epoch {epoch} after step {state.steps_done}/{run.steps}; state saved to "
                      f"{run.files.state}; rerun the same command to resume")
            return signum
        if end_epoch(run, epoch, state, test, images_per_s):
            break
    if dist_world() > 1:
        check_replicas(run)
    if dist_rank() == 0:
        record_end(run, state)
        print(f"{run.name}: done after epoch {state.epochs_done} ({STOPPINGS[state.stopping]}), "
              f"{run.files.weights(state.epochs_done)}", flush=True)
    return 0


def fail(message):
    """One line naming the problem, exit status 2, as argparse does for a bad flag."""
    if dist_rank() == 0:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def start_fresh(config):
    """--fresh: the chosen models' old files go, so nothing of an old run is mistaken for this one's."""
    for scaling, reg, seed, _ in models(config):
        files = model_files(config, scaling, reg, seed)
        for path in [*files.folder.glob(files.weights("*").name), files.state, files.log, files.config]:
            path.unlink(missing_ok=True)


def main(argv=None):
    args = parse_args(argv)
    world = dist_world()
    try:
        config = config_from_args(args)
        device = check_config(config, world)
        for scaling, reg, seed, _ in models(config):  # a foreign or corrupt checkpoint stops the run before it starts
            if not args.fresh:
                TrainingState.read(config, scaling, reg, seed, mmap=True)
        check_zoom_sources(config)
    except (ConfigError, CheckpointError, DeviceError, RunFolderError) as err:
        fail(err)
    if dist_rank() == 0:
        given = given_values(args, Config)
        replaced = [f.name for f in fields(Config) if f.name in PRESETS[args.preset] and f.name not in given]
        if replaced:  # an edit of these in the Config block has no effect under the preset: say so
            print(f"{PROG}: preset {args.preset} sets {', '.join(replaced)} in place of the Config block's values "
                  "(edit PRESETS, or give flags, to change them)", flush=True)
        amp_advice(config.amp, device, PROG, AMP_GAIN if full_size(config) else None)  # where the gain matters
    if config.fft and device.type == "cpu":
        reuse_freed_memory()  # the FFT's large temporaries: reused, not faulted in afresh every step
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if dist_rank() == 0:
            Path(config.out_dir).mkdir(parents=True, exist_ok=True)
            if args.fresh:
                start_fresh(config)
        if world > 1:
            dist.barrier()  # the fresh start's old states are gone before any process looks
        data = load_data(config, device)
        with stop_on_signals(announce=dist_rank() == 0) as stop:
            for scaling, reg, seed, previous_reg in models(config):
                signum = stopped(stop, device) or train_model(config, scaling, reg, seed, previous_reg, data, device,
                                                              stop)
                if signum:
                    sys.exit(128 + signum)
    except (ConfigError, CheckpointError) as err:
        fail(err)
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
