"""Train the discretisation-consistent U-net of Habring & Holler on random circles.

The same network is trained at resolution factors s = 1, 2, 3 (images size_orig * s wide, kernels
3s wide) and several weight decays; Adam gets weight_decay = reg / s^2. Hyperparameters stand in
the block below (the `paper` preset); named presets change some of them and every one can be
overridden on the command line, e.g.

    python unet_circles.py --preset quick
    python unet_circles.py --scalings 3 --weight-decays 1e-3      # exactly one model
    torchrun --standalone --nproc_per_node=4 unet_circles.py --scalings 2 --weight-decays 0

Per model (s, reg) the run folder gets the weights at every checkpoint epoch as a plain state dict
in the authors' naming (size_orig_128_scaling_1_weight_decay_0.001_n_epochs_40.pt), and, under the
same name without `_n_epochs_E`, a training state (.state.pt, the newest only: what a rerun resumes
from), a log (.csv) and the config (.json).
"""

import argparse
import csv
import hashlib
import inspect
import io
import json
import math
import os
import re
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args, get_origin

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from models.trunks import UNet
from utils.circles import noisy_pairs, sample_circles, split
from utils.metrics import edge_measures
from utils.seeds import generator, seed_of
from utils.stopping import stop_on_signals
from utils.runs import checkpoint_name, weight_decay
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
    weight_decays: dict = field(default_factory=PAPER_WEIGHT_DECAYS.copy)  # reg values per s (Adam: reg / s^2); the flag: one list, all s
    epochs: int = 40  # passes over the training samples
    batch_size: int = 32  # images per optimizer step (summed over all processes)
    lr: float = 1e-3  # Adam learning rate
    lr_schedule: Literal["constant", "cosine"] = "constant"  # constant (the paper) or cosine decay to 0
    warm_start: bool = False  # each reg starts from the previous reg's final weights, as the authors' loop did
    bn_recalibration: int = 0  # after training, re-estimate BatchNorm statistics on this many batches (0: off)
    checkpoint_every: int = 5  # write a checkpoint every this many epochs (and at the end)
    seed: int = 0  # seed of initialisation, batch order and noise
    out_dir: str = "data/weights/paper"  # where checkpoints and logs go
    # speed (the defaults are the paper's float32)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda if available, else mps, else cpu
    amp: bool = False  # bfloat16 autocast: faster on GPUs, far slower on CPUs without native bfloat16 (AVX2)
    channels_last: bool = False  # channels-last memory format for the network and its inputs
    compile: bool = False  # torch.compile the network (the first steps are slow while it compiles)


PRESETS = {
    "paper": {},  # PAPER.md's values, as above
    "quick": dict(  # the paper's method scaled down to run on a laptop CPU; see README, "The quick preset"
        size_orig=32,
        samples=2_000,
        width=8,
        depth=1,
        weight_decays={1: (0.0, 1e-3, 1e-2, 1e-1, 0.5, 1.25), 2: (0.0, 1e-3), 3: (0.0, 1e-3)},
        epochs=10,
        lr_schedule="cosine",
        bn_recalibration=20,
        channels_last=True,
        out_dir="data/weights/quick",
    ),
}


def preset_config(name):
    """The Config of a named preset."""
    return Config(**PRESETS[name])


# Fields that may differ between a checkpoint and the command that resumes it: they pick which
# models run and where, or only change speed. Every other field changes the trained weights.
RESUMABLE_CHANGES = ("scalings", "weight_decays", "checkpoint_every", "out_dir", "test_samples", "device",
                     "channels_last", "compile")
PROG = "unet_circles.py"

# ----------------------------------------------------------------------------------------------
# Command line: one flag per Config field, its help the field's comment above.
# ----------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A bad command line or run folder; the message is one sentence naming the problem and the fix."""


def field_help():
    """Each Config field's comment, read from the block above, so each description is written once."""
    comments = re.findall(r"^\s+(\w+): .*?  # (.*)$", inspect.getsource(Config), flags=re.MULTILINE)
    return dict(comments)


def build_parser():
    helps = field_help()
    paper = Config()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train the U-net of Habring & Holler on random circles. Values: Config defaults "
        "(the paper's) < --preset < flags. A rerun resumes every model from its newest checkpoint.",
    )
    changed = {name: ", ".join(values) or "nothing" for name, values in PRESETS.items()}
    parser.add_argument("--preset", choices=list(PRESETS), default="paper",
                        help="named set of values: " + "; ".join(f"{n} changes {c}" for n, c in changed.items()))
    parser.add_argument("--fresh", action="store_true",
                        help="start every chosen model over, deleting its old checkpoints and log")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(paper, f.name)
        if f.name == "weight_decays":
            default = " ".join(map(str, default[1])) + " at s = 1, ..."
        elif isinstance(default, tuple):
            default = " ".join(map(str, default))
        kwargs = dict(default=argparse.SUPPRESS, help=f"{helps[f.name]} [default: {default}]".replace("%", "%%"))
        if f.type is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif get_origin(f.type) is Literal:
            kwargs.update(choices=get_args(f.type))
        elif f.name == "weight_decays":
            kwargs.update(nargs="+", type=float, metavar="REG")
        elif get_origin(f.type) is tuple:
            kwargs.update(nargs="+", type=get_args(f.type)[0])
        else:
            kwargs.update(type=f.type)
        parser.add_argument(flag, **kwargs)
    return parser


def config_from_args(args):
    """Config defaults < preset < command line; weight_decays ends up holding exactly the chosen scalings."""
    given = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    values = {**PRESETS[args.preset], **given}
    values["scalings"] = tuple(values.get("scalings", Config.scalings))
    if "weight_decays" in given:
        values["weight_decays"] = {s: tuple(given["weight_decays"]) for s in values["scalings"]}
    else:
        table = values.get("weight_decays", PAPER_WEIGHT_DECAYS)
        values["weight_decays"] = {s: tuple(table.get(s, ())) for s in values["scalings"]}
    return Config(**values)


def pick_device(name):
    """The device called `name`; auto means cuda if available, else mps, else cpu."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise ConfigError("--device cuda was asked for but CUDA is not available here (CPU-only PyTorch or no GPU); "
                          "use --device cpu or auto")
    if name == "mps" and not mps:
        raise ConfigError("--device mps was asked for but MPS is not available here; use --device cpu or auto")
    if name == "cuda" and dist_world() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def check_config(config, world_size=1):
    """Raise ConfigError for a value that cannot train; nothing is written before this passes."""
    c = config
    n_train = len(split(np.empty(c.n_samples))[0])
    n_test = c.n_samples - n_train
    all_regs = [reg for regs in c.weight_decays.values() for reg in regs]
    missing = [str(s) for s, regs in c.weight_decays.items() if not regs]
    limits = [  # (holds, the sentence if it does not)
        (c.lr >= 0, f"--lr must be >= 0, got {c.lr}"),
        (min(all_regs, default=0) >= 0, f"weight decays must be >= 0, got {' '.join(map(str, all_regs))}"),
        (all(s >= 1 for s in c.scalings), f"every scaling must be >= 1, got --scalings {' '.join(map(str, c.scalings))}"),
        (not missing, f"the preset has no weight decays for scaling {' '.join(missing)}; give them with --weight-decays"),
        (c.epochs >= 1, f"--epochs must be >= 1, got {c.epochs}"),
        (c.batch_size >= 1, f"--batch-size must be >= 1, got {c.batch_size}"),
        (c.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {c.checkpoint_every}"),
        (c.size_orig >= 1, f"--size-orig must be >= 1, got {c.size_orig}"),
        (c.width >= 2 and c.depth >= 1, f"--width must be >= 2 and --depth >= 1, got {c.width} and {c.depth}"),
        (c.sigma_noise >= 0, f"--sigma-noise must be >= 0, got {c.sigma_noise}"),
        (c.bn_recalibration >= 0, f"--bn-recalibration must be >= 0, got {c.bn_recalibration}"),
        (0 < c.samples <= n_train, f"--samples must be 1 to {n_train} (the training split), got {c.samples}"),
        (0 < c.test_samples <= n_test, f"--test-samples must be 1 to {n_test} (the test split), got {c.test_samples}"),
        (c.samples >= c.batch_size, f"--samples {c.samples} is below --batch-size {c.batch_size}: an epoch has no step"),
        (c.size_orig % 2**c.depth == 0, f"--size-orig {c.size_orig} must be divisible by 2^depth = {2**c.depth}"),
        (c.batch_size % world_size == 0, f"--batch-size {c.batch_size} does not split evenly over {world_size} processes"),
    ]
    for holds, sentence in limits:
        if not holds:
            raise ConfigError(sentence)
    device = pick_device(config.device)
    if world_size > 1 and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"torchrun needs --device cpu or cuda, got {device.type}")
    out = Path(config.out_dir)
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"output folder {out} cannot be made because {existing} is a file; choose another --out-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {out} cannot be written ({existing} is not writable); choose another --out-dir")
    return device


# ----------------------------------------------------------------------------------------------
# Files of a run: the authors' weights names, and per model a training state, a log, a config.
# ----------------------------------------------------------------------------------------------


def weights_path(config, scaling, reg, epoch=None):
    """The weights file of model (scaling, reg) after `epoch` epochs (default: the last)."""
    return Path(config.out_dir) / checkpoint_name(config.size_orig, scaling, reg, epoch or config.epochs)


def model_path(config, scaling, reg, suffix):
    """A per-model file: the weights name without `_n_epochs_E`, e.g. ..._weight_decay_0.001.csv."""
    stem = checkpoint_name(config.size_orig, scaling, reg, 0).removesuffix("_n_epochs_0.pt")
    return Path(config.out_dir) / (stem + suffix)


def models(config):
    """(scaling, reg, reg before it) in training order; the previous reg is what --warm-start continues."""
    for s in config.scalings:
        regs = config.weight_decays[s]
        for i, reg in enumerate(regs):
            yield s, reg, regs[i - 1] if i else None


def read_state(config, scaling, reg, mmap=False):
    """The model's training state, or None; a state of another config is a ConfigError."""
    path, final = model_path(config, scaling, reg, ".state.pt"), weights_path(config, scaling, reg)
    if not path.exists():
        if final.exists():  # not this trainer's (a download?): never overwrite it unasked
            raise ConfigError(f"{final} exists without the training state {path.name} next to it; "
                              "use --fresh to overwrite it or another --out-dir")
        return None
    state = load_checkpoint(path, mmap=mmap)
    saved, now = state["config"], dict(asdict(config), scaling=scaling, reg=reg)
    for name, value in now.items():
        if name not in RESUMABLE_CHANGES and saved.get(name) != value:
            raise ConfigError(f"checkpoint {path} was trained with {name} = {saved.get(name)!r}, this command has "
                              f"{value!r}; use --fresh to start over or another --out-dir")
    return state


LOG_COLUMNS = ("epoch", "train_loss", "test_loss", "jump_ratio", "rise_width_px", "seconds", "images_per_s")


def write_log(path, history):
    """The per-epoch log as CSV, rewritten whole so it always matches the training state."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(LOG_COLUMNS))
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, text.getvalue())


def write_text_atomic(path, text):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Data and randomness
# ----------------------------------------------------------------------------------------------
def load_data(config, device):
    """Training circle parameters (samples, 5, 4) float64 on the device, and the fixed noisy test set.

    The images are rasterised per batch on the device from the parameters; the test set's noise is
    drawn once on the CPU so its test loss is the same set on every device.
    """
    train, test = split(sample_circles(config.n_samples, seed=config.data_seed))
    # MPS has no float64, which the rasteriser's exact floors need; there the CPU rasterises.
    data_device = torch.device("cpu") if device.type == "mps" else device
    train = torch.from_numpy(train[: config.samples]).to(data_device)
    test = torch.from_numpy(test[: config.test_samples])
    return train, test


def test_set(config, test_params, scaling, device):
    size = config.size_orig * scaling
    noisy, clean = noisy_pairs(test_params, size, generator("cpu", seed_of("test", config.data_seed)), config.sigma_noise)
    return noisy.to(device), clean.to(device)  # (T, 1, N, N) each


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


def autocast(config, device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if config.amp else nullcontext()


def train_step(config, model, optimizer, noisy, clean, device):
    """One optimizer step on the mean squared error; returns the detached loss."""
    with autocast(config, device):
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
        with autocast(config, device):
            prediction = net(x).float()
        total += F.mse_loss(prediction, truth, reduction="sum").item()
        for output, target in zip(prediction[:, 0].cpu().numpy(), truth[:, 0].cpu().numpy()):
            width, ratio = edge_measures(output, target, scaling)
            widths.append(width)
            ratios.append(ratio)
    net.train()
    widths, ratios = np.concatenate(widths), np.concatenate(ratios)
    return dict(test_loss=total / clean.numel(), jump_ratio=float(np.median(ratios)) if len(ratios) else math.nan,
                rise_width_px=float(np.median(widths)) if len(widths) else math.nan)


def recalibrate_bn(config, net, params, size, device):
    """Re-estimate BatchNorm running statistics as plain averages over fresh training batches.

    During training they are a running average over weights that kept changing; the final
    weights' own statistics fit the evaluation better. Every process uses the same global
    batches, so all end with the same statistics.
    """
    order = generator("cpu", seed_of("bn", config.seed))

    def inputs():
        for i in range(config.bn_recalibration):
            index = torch.randint(len(params), (config.batch_size,), generator=order).to(params.device)
            yield batch(config, params, index, size, seed_of("bn", config.seed, i + 1), device)[0]

    with autocast(config, device):
        torch.optim.swa_utils.update_bn(inputs(), net)


def checksum(net):
    """sha256 of every tensor of the state dict: equal on all processes or DDP went wrong."""
    digest = hashlib.sha256()
    for value in net.state_dict().values():
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def train_model(config, scaling, reg, previous_reg, data, device, stop):
    """Train one model (scaling, reg), resuming from its training state; returns a signal number or 0."""
    rank, world = dist_rank(), dist_world()
    train_params, test_params = data
    size = config.size_orig * scaling
    name = f"s={scaling} reg={reg}"
    state = read_state(config, scaling, reg)
    if state is not None and state["epochs_done"] == config.epochs:  # finished earlier
        if rank == 0:
            print(f"{name}: already trained, {weights_path(config, scaling, reg)}")
        return 0

    torch.manual_seed(seed_of("init", config.seed))
    net = UNet(scaling, config.width, config.depth)
    if state is not None:
        net.load_state_dict(state["model"])
        start = f"resuming at epoch {state['epochs_done'] + 1}, step {state['steps_done']}"
    elif config.warm_start and previous_reg is not None:
        load_state_dict(net, weights_path(config, scaling, previous_reg))
        start = f"warm start from {weights_path(config, scaling, previous_reg)}"
    else:
        start = "fresh init"
    net.to(device)
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=weight_decay(reg, scaling))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    model = net
    if world > 1:
        # Plain per-process BatchNorm: each process normalises its own share of the batch, and
        # DDP copies process 0's running statistics to all before every forward pass.
        device_ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
    if config.compile:
        model = torch.compile(model)

    test = test_set(config, test_params, scaling, device)
    history = state["history"] if state else []
    epochs_done, steps_done = (state["epochs_done"], state["steps_done"]) if state else (0, 0)
    loss_sum, seconds = (state["loss_sum"], state["seconds"]) if state else (0.0, 0.0)
    del state
    steps = len(train_params) // config.batch_size  # an incomplete last batch is dropped; 8,000 / 32 has none
    share = config.batch_size // world  # this process's images of every batch
    if rank == 0:
        n_params = sum(p.numel() for p in net.parameters())
        print(f"{name}: {n_params:,} parameters, {size}x{size} px, Adam weight decay {weight_decay(reg, scaling)}, "
              f"{start}, on {device}" + (f" x {world} processes" if world > 1 else ""), flush=True)
        if not epochs_done and not steps_done:  # the config of the run that made this model
            record = dict(asdict(config), scaling=scaling, reg=reg, start=start, world_size=world)
            write_text_atomic(model_path(config, scaling, reg, ".json"), json.dumps(record, indent=2) + "\n")

    def save(epochs_done, steps_done, loss_sum, seconds, weights):
        """Weights in the authors' naming (at epoch ends), then the state a rerun resumes from."""
        if rank != 0:
            return
        model_state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        if weights:
            save_atomic(model_state, weights_path(config, scaling, reg, epochs_done))
        state = dict(model=model_state, optimizer=optimizer.state_dict(), epochs_done=epochs_done,
                     steps_done=steps_done, loss_sum=loss_sum, seconds=seconds, history=history,
                     config=dict(asdict(config), scaling=scaling, reg=reg))
        save_atomic(state, model_path(config, scaling, reg, ".state.pt"))

    net.train()
    for epoch in range(epochs_done + 1, config.epochs + 1):
        order = torch.randperm(len(train_params), generator=generator("cpu", seed_of("order", config.seed, epoch)))
        order = order.to(train_params.device)
        running = torch.tensor(loss_sum, dtype=torch.float64, device=device)  # on the device: no sync a step
        bar = tqdm(total=steps, initial=steps_done, desc=f"{name} epoch {epoch}/{config.epochs}", unit="step",
                   disable=rank != 0, leave=False, dynamic_ncols=True)
        tic, images = time.perf_counter(), 0
        for step in range(steps_done, steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, (epoch - 1) * steps + step, config.epochs * steps)
            first = step * config.batch_size + rank * share
            noisy, clean = batch(config, train_params, order[first : first + share], size,
                                 seed_of("noise", config.seed, epoch, step, rank), device)
            step_loss = train_step(config, model, optimizer, noisy, clean, device).double()
            if world > 1:  # the whole batch's loss
                dist.all_reduce(step_loss)
                step_loss /= world
            running += step_loss
            images += config.batch_size
            bar.update()
            if rank == 0 and (step % 10 == 0 or step == steps - 1):
                bar.set_postfix(loss=f"{step_loss.item():.4g}", img_s=f"{images / (time.perf_counter() - tic):.1f}")
            signum = stopped(stop, device)
            if signum:
                bar.close()
                save(epoch - 1, step + 1, running.item(), seconds + time.perf_counter() - tic, weights=False)
                if rank == 0:
                    print(f"{name}: stopped in epoch {epoch} after step {step + 1}/{steps}; state saved to "
                          f"{model_path(config, scaling, reg, '.state.pt')}; rerun the same command to resume")
                return signum
        bar.close()
        if epoch == config.epochs and config.bn_recalibration:
            recalibrate_bn(config, net, train_params, size, device)
        elapsed = time.perf_counter() - tic
        seconds += elapsed
        train_loss = running.item() / steps
        if rank == 0:
            row = dict(epoch=epoch, train_loss=train_loss, **test_metrics(config, net, test, scaling, device),
                       seconds=round(seconds, 3), images_per_s=round(images / elapsed, 2))
            history.append(row)
            write_log(model_path(config, scaling, reg, ".csv"), history)
            print(f"{name} epoch {epoch}: train loss {train_loss:.6f}, test loss {row['test_loss']:.6f}, "
                  f"jump ratio {row['jump_ratio']:.3f}, {row['images_per_s']:.1f} img/s, {seconds:.1f} s", flush=True)
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            save(epoch, 0, 0.0, 0.0, weights=True)
        steps_done, loss_sum, seconds = 0, 0.0, 0.0

    if world > 1:
        for buffer in net.buffers():  # process 0's BatchNorm statistics are the ones saved
            dist.broadcast(buffer, 0)
        sums = [None] * world
        dist.all_gather_object(sums, checksum(net))
        if len(set(sums)) != 1:
            raise RuntimeError(f"{name}: the processes ended with different weights: {sums}")
        if rank == 0:
            print(f"{name}: weights identical on all {world} processes (sha256 {sums[0]})")
    if rank == 0:
        print(f"{name}: done, {weights_path(config, scaling, reg)}", flush=True)
    return 0


def fail(message):
    """One line naming the problem, exit status 2, as argparse does for a bad flag."""
    if dist_rank() == 0:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    args = build_parser().parse_args(argv)
    world = dist_world()
    try:
        config = config_from_args(args)
        device = check_config(config, world)
        for scaling, reg, _ in models(config):  # a foreign or corrupt checkpoint stops the run before it starts
            if not args.fresh:
                read_state(config, scaling, reg, mmap=True)
    except (ConfigError, CheckpointError) as err:
        fail(err)

    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if dist_rank() == 0:
            Path(config.out_dir).mkdir(parents=True, exist_ok=True)
            if args.fresh:  # the old run's files go, so nothing of it is mistaken for this run's
                for scaling, reg, _ in models(config):
                    old = Path(config.out_dir).glob(checkpoint_name(config.size_orig, scaling, reg, "*"))
                    for path in [*old, *(model_path(config, scaling, reg, x) for x in (".state.pt", ".csv", ".json"))]:
                        path.unlink(missing_ok=True)
        if world > 1:
            dist.barrier()  # the fresh start's old states are gone before any process looks
        data = load_data(config, device)
        with stop_on_signals(announce=dist_rank() == 0) as stop:
            for scaling, reg, previous_reg in models(config):
                signum = stopped(stop, device) or train_model(config, scaling, reg, previous_reg, data, device, stop)
                if signum:
                    sys.exit(128 + signum)
    except (ConfigError, CheckpointError) as err:
        fail(err)
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
