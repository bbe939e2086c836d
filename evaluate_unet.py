"""Evaluate the U-nets of unet_circles.py: the paper's two comparison figures, raw arrays and edge metrics.

Every model of a weights folder is run once on the paper's five test samples. A folder the trainer
wrote describes itself: each model is rebuilt from the config saved beside its weights, whatever
flags made the run. Weights without a config (the authors' Zenodo files) take the preset's values;
for the `paper` preset, figure weights missing from such a folder are downloaded from Zenodo.

    python evaluate_unet.py                          # the published weights (six files, about 1.2 GB)
    python evaluate_unet.py --preset quick           # the shipped quick weights, offline
    python evaluate_unet.py --weights-dir RUN        # any folder unet_circles.py wrote

Writes into --output-dir (default: data/results/<the weights folder's name>; data/results/unet for the
paper's): comparison_weight_decays.png, comparison_resolutions.png (each where the folder has its models),
regularity.png, training.png (from the trainer's logs), metrics.csv, single/ (every image and cut as a
PNG) and arrays/ (the raw images, one .npz per sample and s); with --zoom also zoom/. What an earlier
evaluation wrote there under these names is deleted first, so every file there is this run's.
"""

import csv
import dataclasses
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.trunks import UNet, fold_for_inference, width_and_depth, zoom
from unet_circles import PRESETS, full_size, preset_config, train_command
from utils import metrics, plotting, zenodo
from utils.circles import CirclesFileError, load_circles_csv, noisy_pairs, sample_circles, split, test_pairs
from utils.config import ConfigError, Parser, check_writable, named_preset
from utils.device import DeviceError, amp_advice, autocast, pick_device
from utils.runs import RunFolderError, checkpoint_name, configured_models, find_models
from utils.weights import CheckpointError, load_state_dict, read_weights

# ----------------------------------------------------------------------------------------------
# Evaluation settings: the paper's (PAPER.md, "Evaluation").
# ----------------------------------------------------------------------------------------------
TEST_SAMPLES = (597, 1675, 982, 545, 1923)  # indices into the test split, in the paper's order
CUT_ROWS = (10, 20, 65, 122, 55)  # each sample's cut row at s = 1 in a CUT_BASE px image
CUT_BASE = 128  # at another size_orig the row moves to the same height: row * size_orig // CUT_BASE
FIGURES = {  # file name -> title; drawn from the models the folder has (_figure_models)
    "comparison_weight_decays": "U-net outputs for different weight decays (s = 1)",  # every s = 1 model
    "comparison_resolutions": "U-net outputs at different resolutions (reg = {reg:g})",  # one reg, every s
}
RESOLUTION_REG = 1e-3  # the paper's reg of the resolution figure, where every s has it (else the smallest that does)
# The (s, reg) the paper's two figures show: what the paper preset downloads from Zenodo.
FIGURE_MODELS = [(1, 0.0), (1, 1e-3), (1, 1e-2), (1, 1e-1), (2, 1e-3), (3, 1e-3)]
NOISE_SEED = 0  # the noisy inputs of the five samples at scaling s are drawn with seed NOISE_SEED + s
# The summary (metrics_summary.csv, regularity.png) measures every model on the first N_TEST images of the
# test split with the trainer's fixed test noise (utils.circles.test_pairs): at 256 they are exactly the
# held-out set of the trainer's log. The paper's full-size networks on a 2-core CPU cost 6.6 s (AVX512) to
# 12 s (AVX2) an image for the six figure models, most of it at s = 3, so there N_TEST_PAPER_CPU keeps the
# evaluation within 1.5x of its time without the summary; on a GPU, or with patience, give --n-test 256.
N_TEST = 256
N_TEST_PAPER_CPU = 3
BATCH = 32  # test images per forward pass
# --zoom alone: the factors k for the paper's full-size networks, and for smaller ones (the quick preset's).
ZOOM_KS = {"paper": (1, 2, 3), "quick": (1, 2, 3, 4, 6, 8)}
# Zoomed to k an image costs about k^4 times the s = 1 one with direct convolutions (k^2 more pixels, k^2
# wider kernels); the wide kernels (k >= 4) go by FFT (models/trunks/fft_conv.py), and the zoom measures
# the first ZOOM_N_TEST test images (at most --n-test): for the quick preset's six s = 1 models at k up to 8,
# about 75 s on 2 cores (the whole evaluation with --zoom: 1 min 43 s).
ZOOM_N_TEST = 32
ZOOM_AUTO = "auto"  # evaluate()'s zoom_ks for --zoom alone: ZOOM_KS by the networks' size
OUTPUT_DIR = "data/results/unet"  # default of --output-dir for the paper; another preset: data/results/<preset>
OUTPUT_NAMES = ("metrics.csv", "metrics_summary.csv", "regularity.png", "training.png", *(f"{n}.png" for n in FIGURES),
                "single", "arrays", "zoom")  # what an evaluation writes: an earlier one's is deleted first
PROG = "evaluate_unet.py"
# What --amp gained on a 2-core AVX512-BF16 CPU (benchmarks/run.py; README, Performance): said on such CPUs
# when --amp is off.
AMP_GAIN = ("--amp (bfloat16 autocast) evaluated the paper's networks 1.25x faster than float32 on such a CPU "
            "(README, Performance), at bfloat16's precision (outputs within about 1% of float32's)")
ROOT = Path(__file__).resolve().parent  # the repository: where the default folders are


class EvaluationError(ValueError):
    """A problem the user can fix (no weights, a folder that cannot be written); one sentence."""


@dataclasses.dataclass
class Images:
    """One set of test images and what every model made of it: numpy arrays (n, N, N) float32."""

    noisy: dict = dataclasses.field(default_factory=dict)  # s -> the noisy inputs
    clean: dict = dataclasses.field(default_factory=dict)  # s -> the ground truth
    recon: dict = dataclasses.field(default_factory=dict)  # (s, reg) -> the model's outputs


@dataclasses.dataclass
class Outputs:
    """Everything one evaluation computed."""

    models: list  # utils.runs.Model, sorted by (scaling, reg)
    showcase: Images  # the paper's five test samples
    test: Images  # the first n_test images of the test split, with the trainer's test noise
    cut_rows: dict  # s -> each showcase sample's cut row
    captions: dict  # (s, reg) -> which weights made the column; "header" and "data" lines too
    params: tuple  # the circle parameters of the showcase samples and of the test images


@torch.inference_mode()
def evaluate(weights_dir, preset="paper", output_dir=OUTPUT_DIR, circles_csv=None, zenodo_url=None, eager=False,
             device="auto", amp=False, n_test=None, zoom_ks=(), zoom_n_test=None):
    """Run every model of weights_dir on the paper's five test samples and on n_test held-out test images, and
    write every output; returns metrics_summary.csv's rows.

    preset: the values of weights files without a trainer config, and the Zenodo download's file list.
    zenodo_url: where missing figure weights of the `paper` preset are downloaded from; None: local files only.
    eager: run each network module by module as defined, instead of the default fast float32 path
    (BatchNorm and the divisions by s^2 folded into the convolutions, channels-last memory format, and
    on the CPU the s = 3 network's wide 9 x 9 convolutions by FFT), which computes the same function up
    to float32 rounding. device, amp: where to run, and whether in bfloat16 autocast. n_test: None for the
    default (N_TEST; N_TEST_PAPER_CPU for the paper's full-size networks on a CPU). zoom_ks: the factors k at which
    every s = 1 model is also evaluated as an s = k network (models.trunks.zoom), into output_dir/zoom/, on the
    first zoom_n_test of the test images (None: ZOOM_N_TEST, at most n_test); ZOOM_AUTO: ZOOM_KS for the models'
    size.
    """
    output_dir, device = Path(output_dir), pick_device(device)
    check_writable(output_dir, "--output-dir")  # nothing is created before the models have run
    if zoom_ks != ZOOM_AUTO and any(not isinstance(k, int) or k < 1 for k in zoom_ks):
        raise EvaluationError(f"--zoom takes whole factors k >= 1, got {' '.join(map(str, zoom_ks))}")
    if zoom_n_test is not None and zoom_n_test < 1:
        raise EvaluationError(f"--zoom-n-test must be at least 1, got {zoom_n_test}")
    circles = (load_circles_csv(circles_csv), f"circles from {circles_csv}") if circles_csv else None
    models = _models(Path(weights_dir), preset, zenodo_url)
    if zoom_ks and not any(m.scaling == 1 for m in models):
        raise EvaluationError(f"--zoom needs a model trained at s = 1, and {weights_dir} has none")
    paper_sized = any(full_size(m) for m in models)
    if zoom_ks == ZOOM_AUTO:
        zoom_ks = ZOOM_KS["paper" if paper_sized else "quick"]
    if n_test is None:
        n_test = N_TEST_PAPER_CPU if device.type == "cpu" and paper_sized else N_TEST
    if zoom_ks and zoom_n_test is not None and 0 < n_test < zoom_n_test:
        raise EvaluationError(f"--zoom-n-test {zoom_n_test} is more than the {n_test} test images of the summary; "
                              f"give at most {n_test}, or a larger --n-test")
    for model in models:  # a damaged or mismatched file is found before the first model runs
        _network(model)
    amp_advice(amp, device, PROG, AMP_GAIN if paper_sized else None)  # the gain matters for the paper's networks
    outputs = _run_all(models, circles, n_test, device, amp, eager)
    output_dir.mkdir(parents=True, exist_ok=True)
    _clear_outputs(output_dir)
    _write_metrics(output_dir / "metrics.csv", outputs)
    summary = _write_summary(output_dir / "metrics_summary.csv", outputs.test)
    _write_arrays(output_dir / "arrays", outputs)
    _write_singles(output_dir / "single", outputs)
    source = _weights_name(models, preset)
    _write_figures(output_dir, outputs, source)
    title = f"Edge sharpness and error on {n_test} held-out test images (medians, 95% intervals), {source}"
    plotting.regularity_figure(output_dir / "regularity.png", summary, title, "\n".join(outputs.captions.values()))
    _write_training_figure(output_dir / "training.png", models, source)
    if zoom_ks:
        _evaluate_zoom(output_dir / "zoom", outputs, sorted(set(zoom_ks)), min(zoom_n_test or ZOOM_N_TEST, n_test),
                       (device, amp, eager), source)
    print(f"wrote the figures, metrics.csv, metrics_summary.csv, single/ and arrays/ into {output_dir}")
    return summary


def _clear_outputs(output_dir):
    """Delete what an earlier evaluation wrote into output_dir (OUTPUT_NAMES only: nothing else of the folder), so
    no figure, image or array of another run stays beside this one's."""
    for name in OUTPUT_NAMES:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _models(folder, preset, zenodo_url):
    """The folder's models; for the paper preset's published files, the missing figure weights downloaded first.

    A folder with the trainer's configs is a run of this project's and is never topped up from Zenodo.
    """
    values = dataclasses.asdict(preset_config(preset))
    published = zenodo_url and preset == "paper" and not (folder.is_dir() and configured_models(folder))
    if not folder.is_dir() and not published:
        raise EvaluationError(f"the weights folder {folder} does not exist")
    models, notes = find_models(folder, values, preset) if folder.is_dir() else ([], [])
    missing = [key for key in FIGURE_MODELS if key not in {model.key for model in models}]
    if published and missing:
        _download(folder, [_preset_weights_name(values, s, reg) for s, reg in missing], zenodo_url)
        models, notes = find_models(folder, values, preset)
    if not models:
        raise EvaluationError(_no_models_message(folder, preset, values, zenodo_url))
    for note in notes:
        print(note)
    return models


def _no_models_message(folder, preset, values, zenodo_url):
    """Why a folder has nothing to evaluate, and the command that fills it."""
    configured = configured_models(folder) if folder.is_dir() else {}
    if configured:  # the trainer's configs without final weights: a run not finished, or weights not shipped
        return (f"none of the {len(configured)} models configured in {folder} has its final weights (training not "
                f"finished, or the .pt files deleted or not shipped); train them with "
                f"`python {train_command([model.origin for model in configured.values()], folder)}`")
    first = f"{folder}/" + _preset_weights_name(values, 1, values["weight_decays"][1][0])
    if preset == "paper":
        fetch = "drop --no-download to fetch" if zenodo_url is None else "fetch"
        how = f"{fetch} the paper's from Zenodo record {zenodo.RECORD}, or put them there by hand"
    else:
        default = (ROOT / values["out_dir"]).resolve() == folder.resolve()
        how = f"make them with `python unet_circles.py --preset {preset}{'' if default else f' --output-dir {folder}'}`"
    return f"no weights in {folder}: neither a config unet_circles.py wrote nor a file like {first}; {how}"


def _preset_weights_name(values, scaling, reg):
    """The name a weights file of the preset's table has (the authors' naming)."""
    return checkpoint_name(values["size_orig"], scaling, reg, values["epochs"])


def _run_all(models, circles, n_test, device, amp, eager):
    """Every model on the five showcase samples and on the n_test test images, each network loaded once.

    One noisy input per image and s, shared by every model at that s (the authors drew anew per model).
    circles: (parameters, where they come from) of a circles file, or None for the models' seeded data set.
    """
    shared = models[0]  # utils.runs.check_shared: every model agrees on the size, noise and data set
    seeded = f"the seeded circles data set (n_samples {shared.n_samples}, data_seed {shared.data_seed})"
    params, origin = circles or (sample_circles(shared.n_samples, seed=shared.data_seed), seeded)
    showcase, test = _test_params(split(params)[1], origin, n_test)
    captions = {"header": f"weights: folder {_shown(shared.folder)}"}
    for m in models:
        captions[m.key] = f"  s = {m.scaling}, reg = {m.reg:g}: {m.files.weights().name} ({_source(m)})"
    print("\n".join(captions.values()))
    captions["data"] = (f"data: {origin}; showcase: test samples {', '.join(map(str, TEST_SAMPLES))}, noise seed "
                        f"{NOISE_SEED} + s; summary and zoom: the first test samples (as many as the title says), the "
                        f"trainer's test noise; "
                        f"sigma_noise {shared.sigma_noise}; one noisy input per image and s for all models")
    images = Images(), Images()
    for s in sorted({m.scaling for m in models}):
        size = shared.size_orig * s
        pairs = (noisy_pairs(showcase, size, torch.Generator().manual_seed(NOISE_SEED + s), shared.sigma_noise),
                 test_pairs(test, size, shared.sigma_noise, shared.data_seed))  # (n, 1, N, N) each
        for target, (noisy, clean) in zip(images, pairs, strict=True):
            target.noisy[s], target.clean[s] = noisy[:, 0].numpy(), clean[:, 0].numpy()
        for model in (m for m in models if m.scaling == s):
            tic = time.perf_counter()
            net = _load_network(model, device, eager)
            for target, (noisy, _) in zip(images, pairs, strict=True):
                target.recon[model.key] = _apply(net, noisy, device, amp)[:, 0].numpy()  # (n, N, N)
            print(f"s = {model.scaling}, reg = {model.reg:g}: {model.files.weights().name}, {len(showcase)} + {n_test} "
                  f"images in {time.perf_counter() - tic:.2f} s")
    return Outputs(models, *images, _cut_rows(shared, images[0].noisy), captions, (showcase, test))


def _cut_rows(model, scalings):
    """Each showcase sample's cut row at every resolution factor s (the same physical height)."""
    return {s: [row * model.size_orig // CUT_BASE * s for row in CUT_ROWS] for s in scalings}


def _test_params(test, origin, n_test):
    """The showcase samples' (5, 5, 4) and the first n_test test samples' circle parameters, as tensors."""
    if len(test) <= max(TEST_SAMPLES):
        raise EvaluationError(f"{origin} has {len(test)} test samples, too few for test sample {max(TEST_SAMPLES)} "
                              f"of its last 20% (the paper's data set has 10,000)")
    if not 0 < n_test <= len(test):
        raise EvaluationError(f"--n-test must be 1 to {len(test)} (the test split of {origin}), got {n_test}")
    return torch.as_tensor(test[list(TEST_SAMPLES)]), torch.as_tensor(test[:n_test])


def _download(folder, names, zenodo_url):
    """Fetch the missing paper checkpoints from Zenodo; a failure to connect says how to go on without."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EvaluationError(
            f"cannot create the weights folder {folder} ({err.strerror}); choose another with --weights-dir"
        ) from None
    try:
        zenodo.fetch(names, folder, zenodo_url)
    except zenodo.ZenodoAnswered as err:  # a wrong address, or a record without these files
        raise zenodo.ZenodoAnswered(
            f"{err}; check --zenodo-url (or $ZENODO_URL; default {zenodo.ZENODO_URL}), or put "
            f"{', '.join(names)} from https://zenodo.org/records/{zenodo.RECORD} into {folder} by hand"
        ) from None
    except zenodo.ZenodoUnreachable as err:
        if created and not any(folder.iterdir()):  # nothing came: leave no empty folder behind
            folder.rmdir()
        raise zenodo.ZenodoUnreachable(
            f"{err}; put {', '.join(names)} from https://zenodo.org/records/{zenodo.RECORD} "
            f"into {folder} by hand, or see the effect offline with the quick preset's shipped weights: "
            f"python evaluate_unet.py --preset quick"
        ) from None


def _weights_name(models, preset):
    """What the titles call the weights: the folder, when the trainer wrote it (its configs say what made it),
    else the preset whose values the files took."""
    return f"weights {_shown(models[0].folder)}" if all(m.configured for m in models) else f"preset {preset}"


def _shown(folder):
    """A folder as a caption names it: relative to the repository when inside it (no machine's paths in the
    shipped figures)."""
    folder = Path(folder).resolve()
    return folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder


def _network(model):
    """The model's U-net from its checkpoint, strictly (weights only): a damaged or mismatched file is a
    CheckpointError naming it."""
    path = model.files.weights()
    state = read_weights(path)
    # A trainer's model is rebuilt from its config; a file without one (the authors') shows its own shape.
    width, depth = model.width, model.depth
    if not model.configured:
        width, depth = width_and_depth(state, (width, depth))
    return load_state_dict(UNet(model.scaling, width, depth), path, state=state).eval()


def _load_network(model, device, eager, zoom_k=1):
    """The model's network (_network), ready for inference on the device; zoom_k > 1: the s = 1 network seen on
    a zoom_k times finer grid (models.trunks.zoom)."""
    net = _network(model)
    if zoom_k > 1:
        net = zoom(net, zoom_k)
    if not eager:  # the fast path: fewer passes over every feature map, channels-last, FFT where faster
        net = fold_for_inference(net, fft=device.type == "cpu").to(memory_format=torch.channels_last)
    return net.to(device)


def _apply(net, images, device, amp):
    """The network's outputs (n, 1, N, N) on the CPU for images (n, 1, N, N), BATCH at a time."""
    outputs = []
    for batch in images.split(BATCH):
        x = batch.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(amp, device):
            outputs.append(net(x).float().cpu())
    return torch.cat(outputs)


def _source(model):
    if zenodo.from_record(model.files.weights()):
        return f"Zenodo record {zenodo.RECORD}, MD5 verified"
    return f"config {Path(model.origin).name}" if model.configured else f"local file, values of {model.origin}"


def _write_metrics(path, outputs):
    """metrics.csv: one row per (sample, s, reg), ground-truth rows first as the reference."""
    rows, images = [], outputs.showcase
    for i in range(len(TEST_SAMPLES)):
        for s, clean in images.clean.items():
            measured = [(metrics.GROUND_TRUTH, clean)] + [(reg, x) for (t, reg), x in images.recon.items() if t == s]
            for reg, image in measured:
                rows.append(dict(sample=i, scaling=s, reg=reg, **metrics.summary(image[i], clean[i], s)))
    _write_csv(path, rows)
    return rows


def _write_summary(path, images):
    """metrics_summary.csv: per s the ground truth and the noisy input as references, then every model: medians
    over the test set with 95% bootstrap intervals (utils.metrics.set_summary)."""
    rows = []
    for s, clean in images.clean.items():
        measured = [(metrics.GROUND_TRUTH, clean), (metrics.NOISY_INPUT, images.noisy[s])]
        measured += [(reg, x) for (t, reg), x in images.recon.items() if t == s]
        rows += [dict(scaling=s, reg=reg, **metrics.set_summary(x, clean, s)) for reg, x in measured]
    _write_csv(path, rows)
    return rows


def _write_csv(path, rows):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(list(rows[0]))
        for row in rows:
            writer.writerow([_format(value) for value in row.values()])


def _format(value):
    """Numbers as in the weight-decay table (0.001, not 1e-03), at most 6 significant digits."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _write_arrays(folder, outputs):
    """The showcase samples' images as arrays, one .npz per sample and s."""
    folder.mkdir(exist_ok=True)
    images = outputs.showcase
    for s, noisy in images.noisy.items():
        for i in range(len(noisy)):
            recons = {f"recon_reg{reg:g}": x[i] for (t, reg), x in images.recon.items() if t == s}
            np.savez(folder / f"sample{i}_scaling{s}.npz", noisy=noisy[i], ground_truth=images.clean[s][i], **recons)


def _write_singles(folder, outputs):
    """Every image and its cut as PNGs, on one grey scale per (sample, s)."""
    folder.mkdir(exist_ok=True)
    cuts, showcase = [], outputs.showcase
    for s, noisy in showcase.noisy.items():
        images = [("noisy", noisy), ("ground_truth", showcase.clean[s])]
        images += [(f"recon_reg{reg:g}", x) for (t, reg), x in showcase.recon.items() if t == s]
        for i, row in enumerate(outputs.cut_rows[s]):
            low, high = plotting.value_range([x[i] for _, x in images])
            for name, x in images:
                stem = folder / f"sample{i}_scaling{s}_{name}"
                plotting.save_image(f"{stem}.png", x[i], low, high)
                cuts.append((f"{stem}_cut.png", x[i][row], low, high, f"sample {i}, s = {s}, {name}, row {row}"))
    plotting.save_cuts(cuts)


def _figure_models(keys):
    """Each comparison figure's (title, its models' (s, reg)) from the models there are (keys), or (None, why it is
    skipped): the weight-decay figure shows every s = 1 model, the resolution figure one reg at every s."""
    s1 = sorted(key for key in keys if key[0] == 1)
    scalings = sorted({s for s, _ in keys})
    common = sorted(set.intersection(*({reg for t, reg in keys if t == s} for s in scalings))) if keys else []
    reg = RESOLUTION_REG if RESOLUTION_REG in common else common[0] if common else None
    decays, resolutions = FIGURES["comparison_weight_decays"], FIGURES["comparison_resolutions"]
    return {
        "comparison_weight_decays": (decays, s1) if len(s1) > 1 else (None, "it needs two models at s = 1 or more"),
        "comparison_resolutions": (resolutions.format(reg=reg), [(s, reg) for s in scalings])
        if len(scalings) > 1 and reg is not None else (None, "it needs one reg trained at every s, at two s or more"),
    }


def _write_figures(output_dir, outputs, source):
    """The comparison figures (_figure_models); one line for each skipped. source: what the titles call the
    weights (_weights_name)."""
    images, rows = outputs.showcase, outputs.cut_rows
    for name, (title, keys) in _figure_models(list(images.recon)).items():
        if title is None:
            print(f"{name}.png skipped: {keys}")
            continue
        s0 = keys[0][0]  # inputs are shown at the first column's resolution
        columns = [(f"noisy input, s = {s0}", images.noisy[s0], rows[s0], images.clean[s0]),
                   (f"ground truth, s = {s0}", images.clean[s0], rows[s0], None)]
        columns += [(f"s = {s}, reg = {reg:g}", images.recon[s, reg], rows[s], images.clean[s]) for s, reg in keys]
        captions = outputs.captions
        caption = "\n".join([captions["header"], *(captions[key] for key in keys), captions["data"]])
        plotting.comparison_figure(output_dir / f"{name}.png", columns, f"{title}, {source}", caption)


def _write_training_figure(path, models, source):
    """training.png from the trainer's logs next to the weights (none for downloaded weights): every model."""
    logs = {}
    for model in models:
        if model.files.log.is_file():
            with open(model.files.log, newline="") as file:
                label = f"s = {model.scaling}, reg = {model.reg:g}"
                logs[label] = list(csv.DictReader(file)), model.size_orig * model.scaling
    if logs:
        title = f"Training of every model, {source}: the test set after each epoch"
        plotting.training_figure(path, logs, title,
                                 f"logs: {_shown(models[0].folder)}/*.csv (the trainer's, one row per epoch; "
                                 "the test set: its fixed noisy held-out images)")


def _evaluate_zoom(folder, outputs, ks, n_test, run, source):
    """Every s = 1 model zoomed to each k, on the first n_test test images and the showcase samples at
    size_orig * k: zoom/zoom.csv (medians with intervals, beside the models trained at s = k where the folder
    has them, on the same images), zoom/zoom.png and zoom/arrays/sample{i}_k{k}.npz. run: (device, amp, eager)."""
    device, amp, eager = run
    shared, (showcase, test) = outputs.models[0], outputs.params
    test = test[:n_test]
    s1 = [m for m in outputs.models if m.scaling == 1]
    (folder / "arrays").mkdir(parents=True, exist_ok=True)
    rows, cuts = [], {}
    for k in ks:
        size = shared.size_orig * k
        show_noisy, show_clean = noisy_pairs(showcase, size, torch.Generator().manual_seed(NOISE_SEED + k),
                                             shared.sigma_noise)  # the inputs the s = k models saw, when k = s
        noisy, clean = test_pairs(test, size, shared.sigma_noise, shared.data_seed)
        clean_k = clean[:, 0].numpy()
        rows += [dict(k=k, reg=ref, source=ref, **metrics.set_summary(x, clean_k, k))
                 for ref, x in ((metrics.GROUND_TRUTH, clean_k), (metrics.NOISY_INPUT, noisy[:, 0].numpy()))]
        recons = {}
        for model in s1:
            tic = time.perf_counter()
            net = _load_network(model, device, eager, zoom_k=k)
            recon = _apply(net, noisy, device, amp)[:, 0].numpy()
            recons[f"recon_reg{model.reg:g}"] = _apply(net, show_noisy, device, amp)[:, 0].numpy()
            rows.append(dict(k=k, reg=model.reg, source="zoomed", **metrics.set_summary(recon, clean_k, k)))
            print(f"zoom k = {k}, reg = {model.reg:g}: {len(test)} + {len(showcase)} images in "
                  f"{time.perf_counter() - tic:.2f} s")
            cuts[k, model.reg] = recons[f"recon_reg{model.reg:g}"]
        for model in outputs.models:  # the models trained at s = k, on the same images and noise
            if model.scaling == k > 1 and model.reg in {m.reg for m in s1}:
                recon = _apply(_load_network(model, device, eager), noisy, device, amp)[:, 0].numpy()
                rows.append(dict(k=k, reg=model.reg, source="trained", **metrics.set_summary(recon, clean_k, k)))
        cuts[k, metrics.GROUND_TRUTH] = show_clean[:, 0].numpy()
        for i in range(len(showcase)):
            np.savez(folder / "arrays" / f"sample{i}_k{k}.npz", noisy=show_noisy[i, 0].numpy(),
                     ground_truth=show_clean[i, 0].numpy(), **{name: x[i] for name, x in recons.items()})
    _write_csv(folder / "zoom.csv", rows)
    title = (f"One s = 1 network zoomed to k times its resolution ({len(test)} test images; medians, 95% intervals), "
             f"{source}")
    lines = [outputs.captions["header"], *(outputs.captions[m.key] for m in s1)]
    trained = [m for m in outputs.models if m.scaling in ks and m.scaling > 1 and m.reg in {m.reg for m in s1}]
    if trained:  # drawn as squares
        lines += ["trained at s = k (squares):", *(outputs.captions[m.key] for m in trained)]
    caption = "\n".join([*lines, outputs.captions["data"]])
    plotting.zoom_figure(folder / "zoom.png", rows, cuts, _cut_rows(shared, ks), title, caption)
    print(f"wrote zoom.csv, zoom.png and arrays/ into {folder}")


def build_parser(preset="paper"):
    """The command line; --help shows the values of `preset` (the one named on the command line)."""
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                    epilog=f"[values shown: preset {preset}; give --preset NAME --help for another]")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                        help="the default weights folder, and the values of weights files without a config beside them "
                        "(the authors' Zenodo files) [default: paper]")
    parser.add_argument("--weights-dir",
                        help="folder of the checkpoints: any folder unet_circles.py wrote, or the authors' files "
                        f"[{preset}: {preset_config(preset).out_dir}, where unet_circles.py writes the preset's]")
    parser.add_argument("--output-dir",
                        help=f"where results go [{preset}: {_default_output_dir(preset, None).relative_to(ROOT)}; "
                        "with --weights-dir RUN: data/results/<RUN's name>]")
    parser.add_argument("--circles-csv", help="the authors' circles CSV instead of the seeded data set")
    parser.add_argument("--n-test", type=int,
                        help="held-out test images the summary measures every model on: the first N of the test "
                        f"split [{N_TEST}; {N_TEST_PAPER_CPU} for the paper's full-size networks on a CPU, where an "
                        "image costs seconds]")
    quick, paper = (" ".join(map(str, ZOOM_KS[name])) for name in ("quick", "paper"))
    parser.add_argument("--zoom", nargs="*", type=int, metavar="K",
                        help="also evaluate every s = 1 model zoomed to K times its resolution "
                        f"(models/trunks/zoom.py) into OUTPUT_DIR/zoom/; --zoom alone: {quick} for networks "
                        f"smaller than the paper's (the quick preset's), {paper} for the paper's full-size ones")
    parser.add_argument("--zoom-n-test", type=int,
                        help="test images the zoom measures: the first N of the test split, at most --n-test "
                        f"[{ZOOM_N_TEST}, or --n-test where that is smaller]")
    parser.add_argument("--no-download", action="store_true", help="use local weights only, never Zenodo")
    parser.add_argument("--zenodo-url", default=os.environ.get("ZENODO_URL", zenodo.ZENODO_URL),
                        help="Zenodo's base address [$ZENODO_URL, else %(default)s]")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="auto: cuda if available, else mps, else cpu")
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 autocast (for GPUs and CPUs with native bfloat16; emulated and far slower on "
                        f"AVX2-only CPUs). {AMP_GAIN}".replace("%", "%%"))
    parser.add_argument("--eager", action="store_true",
                        help="run each network module by module as defined (the reference), not the default fast "
                        "float32 path with BatchNorm and /s^2 folded into the convolutions and, on the CPU, the s = 3 "
                        "network's wide 9 x 9 convolutions by FFT (equal up to float32 rounding)")
    return parser


def _default_output_dir(preset, weights_dir):
    """--output-dir's default: the preset's results folder for its own weights, else data/results/<the weights
    folder's name>, so that evaluating another run never writes over the preset's results."""
    if weights_dir is None or Path(weights_dir).resolve() == (ROOT / preset_config(preset).out_dir).resolve():
        return ROOT / (OUTPUT_DIR if preset == "paper" else f"data/results/{preset}")
    return ROOT / "data/results" / Path(weights_dir).resolve().name


def main(argv=None):
    args = build_parser(named_preset(argv, PRESETS)).parse_args(argv)
    try:
        # Default folders are the repository's, wherever the script is run from; given ones are as given.
        weights_dir = args.weights_dir or ROOT / preset_config(args.preset).out_dir
        if args.weights_dir and not Path(args.weights_dir).is_dir():
            raise EvaluationError(f"the weights folder {args.weights_dir} does not exist")
        download_from = args.zenodo_url if args.preset == "paper" and not args.no_download else None
        output_dir = args.output_dir or _default_output_dir(args.preset, args.weights_dir)
        zoom_ks = () if args.zoom is None else args.zoom or ZOOM_AUTO
        evaluate(weights_dir, args.preset, output_dir, args.circles_csv, download_from, args.eager, args.device,
                 args.amp, args.n_test, zoom_ks, args.zoom_n_test)
    except (EvaluationError, ConfigError, RunFolderError, CheckpointError, CirclesFileError, DeviceError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except zenodo.ZenodoError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the command to evaluate (files it had begun to write may be incomplete)",
              file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
