"""Evaluate the U-nets of unet_circles.py: the paper's two comparison figures, raw arrays and edge metrics.

Every model of a weights folder is run once on the paper's five test samples. A folder the trainer
wrote describes itself: each model is rebuilt from the config saved beside its weights, whatever
flags made the run. Weights without a config (the authors' Zenodo files) take the preset's values;
for the `paper` preset, figure weights missing from such a folder are downloaded from Zenodo.

    python evaluate_unet.py                          # the published weights (six files, about 1.2 GB)
    python evaluate_unet.py --preset quick           # the shipped quick weights, offline
    python evaluate_unet.py --weights-dir RUN        # any folder unet_circles.py wrote

Writes into --output-dir: comparison_weight_decays.png, comparison_resolutions.png (each where the
folder has its models), regularity.png, training.png (from the trainer's logs), metrics.csv,
single/ (every image and cut as a PNG) and arrays/ (the raw images, one .npz per sample and s).
"""

import argparse
import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.trunks import UNet, fold_for_inference, width_and_depth
from unet_circles import PRESETS, preset_config
from utils import metrics, plotting, zenodo
from utils.circles import CirclesFileError, load_circles_csv, noisy_pairs, sample_circles, split
from utils.device import DeviceError, autocast, pick_device, warn_if_slow_amp
from utils.runs import RunFolderError, checkpoint_name, configured_models, find_models
from utils.weights import CheckpointError, load_state_dict, read_weights

# ----------------------------------------------------------------------------------------------
# Evaluation settings: the paper's (PAPER.md, "Evaluation").
# ----------------------------------------------------------------------------------------------
TEST_SAMPLES = (597, 1675, 982, 545, 1923)  # indices into the test split, in the paper's order
CUT_ROWS = (10, 20, 65, 122, 55)  # each sample's cut row at s = 1 in a CUT_BASE px image
CUT_BASE = 128  # at another size_orig the row moves to the same height: row * size_orig // CUT_BASE
FIGURES = {  # file name -> (title, the (s, reg) of its model columns)
    "comparison_weight_decays": (
        "U-net outputs for different weight decays (s = 1)",
        ((1, 0.0), (1, 1e-3), (1, 1e-2), (1, 1e-1)),
    ),
    "comparison_resolutions": (
        "U-net outputs at different resolutions (reg = 0.001)",
        ((1, 1e-3), (2, 1e-3), (3, 1e-3)),
    ),
}
TRAINING_FIGURE_REGS = (1e-3, 0.0)  # training.png: every s at these regs, from the trainer's logs
NOISE_SEED = 0  # the noisy inputs at scaling s are drawn with seed NOISE_SEED + s
OUTPUT_DIR = "data/results/unet"  # default of --output-dir for the paper; another preset: data/results/<preset>
PROG = "evaluate_unet.py"


class EvaluationError(ValueError):
    """A problem the user can fix (no weights, a folder that cannot be written); one sentence."""


@dataclasses.dataclass
class Outputs:
    """Everything one evaluation computed, as numpy arrays (n, N, N) float32 per s and per model."""

    models: list  # utils.runs.Model, sorted by (scaling, reg)
    noisy: dict  # s -> the noisy inputs
    clean: dict  # s -> the ground truth
    recon: dict  # (s, reg) -> the model's outputs
    cut_rows: dict  # s -> each sample's cut row
    captions: dict  # (s, reg) -> which weights made the column; "header" and "data" lines too


@torch.inference_mode()
def evaluate(weights_dir, preset="paper", output_dir=OUTPUT_DIR, circles_csv=None, zenodo_url=None, eager=False,
             device="auto", amp=False):
    """Run every model of weights_dir on the paper's test samples and write every output; returns metrics.csv's rows.

    preset: the values of weights files without a trainer config, and the Zenodo download's file list.
    zenodo_url: where missing figure weights of the `paper` preset are downloaded from; None: local files only.
    eager: run each network module by module as defined, instead of the default fast float32 path
    (BatchNorm and the divisions by s^2 folded into the convolutions, channels-last memory format, and
    on the CPU the s = 3 network's wide 9 x 9 convolutions by FFT), which computes the same function up
    to float32 rounding. device, amp: where to run, and whether in bfloat16 autocast.
    """
    output_dir, device = Path(output_dir), pick_device(device)
    warn_if_slow_amp(amp, device, PROG)
    _check_writable(output_dir)
    circles = (load_circles_csv(circles_csv), f"circles from {circles_csv}") if circles_csv else None
    models = _models(Path(weights_dir), preset, zenodo_url)
    outputs = _run_all(models, circles, device, amp, eager)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = _write_metrics(output_dir / "metrics.csv", outputs)
    _write_arrays(output_dir / "arrays", outputs)
    _write_singles(output_dir / "single", outputs)
    _write_figures(output_dir, outputs, preset)
    plotting.regularity_figure(
        output_dir / "regularity.png",
        rows,
        f"Edge sharpness of the U-net outputs, preset {preset}",
        "\n".join(outputs.captions.values()),
    )
    _write_training_figure(output_dir / "training.png", models, preset)
    print(f"wrote the figures, metrics.csv, single/ and arrays/ into {output_dir}")
    return rows


def _models(folder, preset, zenodo_url):
    """The folder's models; for the paper preset's published files, the missing figure weights downloaded first."""
    if not folder.is_dir() and not (zenodo_url and preset == "paper"):
        raise EvaluationError(f"the weights folder {folder} does not exist")
    values = dataclasses.asdict(preset_config(preset))
    if folder.is_dir() and configured_models(folder):  # a trainer's run folder: never topped up from Zenodo
        models, notes = find_models(folder, values, preset)
    else:
        needed = sorted({model for _, columns in FIGURES.values() for model in columns})
        models, notes = find_models(folder, values, preset) if folder.is_dir() else ([], [])
        have = {model.key for model in models}
        if zenodo_url and preset == "paper" and any(key not in have for key in needed):
            _download(
                folder, [_preset_weights_name(values, s, reg) for s, reg in needed if (s, reg) not in have], zenodo_url
            )
            models, notes = find_models(folder, values, preset)
    for note in notes:
        print(note)
    if not models:
        raise EvaluationError(_no_models_message(folder, preset, values))
    return models


def _no_models_message(folder, preset, values):
    first = f"{folder}/" + _preset_weights_name(values, 1, values["weight_decays"][1][0])
    if preset == "paper":
        how = f"drop --no-download to fetch the paper's from Zenodo record {zenodo.RECORD}, or put them there by hand"
    else:
        how = f"make them with `python unet_circles.py --preset {preset}`"
    return f"no weights in {folder}: neither a config unet_circles.py wrote nor a file like {first}; {how}"


def _preset_weights_name(values, scaling, reg):
    """The name a weights file of the preset's table has (the authors' naming)."""
    return checkpoint_name(values["size_orig"], scaling, reg, values["epochs"])


def _check_writable(folder):
    """The output folder can be made: its nearest existing ancestor is a writable folder (nothing is created yet)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is a file" if not existing.is_dir() else "is not writable"
        raise EvaluationError(
            f"cannot write to the output folder {folder} ({existing} {why}); choose another with --output-dir"
        )


def _run_all(models, circles, device, amp, eager):
    """One noisy input per (sample, s), shared by every model at that s (the authors drew anew per model).

    circles: (parameters, where they come from) of a circles file, or None for the models' seeded data set.
    """
    shared = models[0]  # utils.runs.check_shared: every model agrees on the size, noise and data set
    test, data_note = _test_samples(shared, circles)  # (5, 5, 4)
    header = f"weights: folder {shared.folder}"
    captions = {"header": header}
    captions.update(
        {m.key: f"  s = {m.scaling}, reg = {m.reg:g}: {m.files.weights().name} ({_source(m)})" for m in models}
    )
    print("\n".join(captions.values()))
    noisy, clean, recon = {}, {}, {}
    for s in sorted({m.scaling for m in models}):
        generator = torch.Generator().manual_seed(NOISE_SEED + s)
        noisy[s], clean[s] = noisy_pairs(test, shared.size_orig * s, generator, shared.sigma_noise)  # (5, 1, N, N)
        for model in (m for m in models if m.scaling == s):
            recon[model.key] = _run_model(model, noisy[s], device, amp, eager)[:, 0].numpy()  # (5, N, N)
    captions["data"] = "\n".join(data_note)
    cut_rows = {s: [row * shared.size_orig // CUT_BASE * s for row in CUT_ROWS] for s in noisy}
    return Outputs(
        models,
        {s: x[:, 0].numpy() for s, x in noisy.items()},
        {s: x[:, 0].numpy() for s, x in clean.items()},
        recon,
        cut_rows,
        captions,
    )


def _test_samples(model, circles):
    """The paper's test samples (5, 5, 4) as a tensor, and caption lines saying where they come from."""
    if circles:
        params, origin = circles
    else:
        params = sample_circles(model.n_samples, seed=model.data_seed)
        origin = f"the seeded circles data set (n_samples {model.n_samples}, data_seed {model.data_seed})"
    test = split(params)[1]
    if len(test) <= max(TEST_SAMPLES):
        raise EvaluationError(
            f"{origin} has {len(params)} samples, too few for test sample {max(TEST_SAMPLES)} "
            f"of its last 20% (the paper's data set has 10,000)"
        )
    note = [
        f"data: {origin}, test samples {', '.join(map(str, TEST_SAMPLES))};",
        f"noise: sigma_noise {model.sigma_noise}, seed {NOISE_SEED} + s, one draw per sample and s for all models",
    ]
    return torch.as_tensor(test[list(TEST_SAMPLES)]), note


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
    except zenodo.ZenodoUnreachable as err:
        if created and not any(folder.iterdir()):  # nothing came: leave no empty folder behind
            folder.rmdir()
        raise zenodo.ZenodoUnreachable(
            f"{err}; put {', '.join(names)} from https://zenodo.org/records/{zenodo.RECORD} "
            f"into {folder} by hand, or see the effect offline with the quick preset's shipped weights: "
            f"python evaluate_unet.py --preset quick"
        ) from None


def _run_model(model, noisy, device, amp, eager):
    """Load one checkpoint (strictly, weights only) and run the whole batch through it once."""
    start = time.perf_counter()
    path = model.files.weights()
    state = read_weights(path)
    # A trainer's model is rebuilt from its config; a file without one (the authors') shows its own shape.
    width, depth = model.width, model.depth
    if not model.configured:
        width, depth = width_and_depth(state, (width, depth))
    net = load_state_dict(UNet(model.scaling, width, depth), path, state=state).eval()
    x = noisy.to(device)
    if not eager:  # the fast path: fewer passes over every feature map, channels-last, FFT where faster
        net = fold_for_inference(net, fft=device.type == "cpu").to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(amp, device):
        output = net.to(device)(x)  # (5, 1, N, N)
    output = output.float().cpu()
    print(f"s = {model.scaling}, reg = {model.reg:g}: {path.name}, {len(noisy)} images in "
          f"{(time.perf_counter() - start) * 1000:.0f} ms")
    return output


def _source(model):
    if zenodo.from_record(model.files.weights()):
        return f"Zenodo record {zenodo.RECORD}, MD5 verified"
    return f"config {Path(model.origin).name}" if model.configured else f"local file, values of {model.origin}"


def _write_metrics(path, outputs):
    """metrics.csv: one row per (sample, s, reg), ground-truth rows first as the reference."""
    rows = []
    for i in range(len(TEST_SAMPLES)):
        for s, clean in outputs.clean.items():
            images = [(metrics.GROUND_TRUTH, clean)] + [(reg, x) for (t, reg), x in outputs.recon.items() if t == s]
            for reg, image in images:
                rows.append(dict(sample=i, scaling=s, reg=reg, **metrics.summary(image[i], clean[i], s)))
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
    folder.mkdir(exist_ok=True)
    for s, noisy in outputs.noisy.items():
        for i in range(len(noisy)):
            recons = {f"recon_reg{reg:g}": x[i] for (t, reg), x in outputs.recon.items() if t == s}
            np.savez(folder / f"sample{i}_scaling{s}.npz", noisy=noisy[i], ground_truth=outputs.clean[s][i], **recons)


def _write_singles(folder, outputs):
    """Every image and its cut as PNGs, on one grey scale per (sample, s)."""
    folder.mkdir(exist_ok=True)
    cuts = []
    for s, noisy in outputs.noisy.items():
        images = [("noisy", noisy), ("ground_truth", outputs.clean[s])]
        images += [(f"recon_reg{reg:g}", x) for (t, reg), x in outputs.recon.items() if t == s]
        for i, row in enumerate(outputs.cut_rows[s]):
            low, high = plotting.value_range([x[i] for _, x in images])
            for name, x in images:
                stem = folder / f"sample{i}_scaling{s}_{name}"
                plotting.save_image(f"{stem}.png", x[i], low, high)
                cuts.append((f"{stem}_cut.png", x[i][row], low, high, f"sample {i}, s = {s}, {name}, row {row}"))
    plotting.save_cuts(cuts)


def _write_figures(output_dir, outputs, preset):
    """The paper's comparison figures whose models are all in the folder; one line for each skipped."""
    for name, (title, figure_models) in FIGURES.items():
        absent = [key for key in figure_models if key not in outputs.recon]
        if absent:
            print(f"{name}.png skipped: it needs " + ", ".join(f"s = {s}, reg = {reg:g}" for s, reg in absent) +
                  ", which the weights folder lacks")
            continue
        s0 = figure_models[0][0]  # inputs are shown at the first column's resolution
        rows = outputs.cut_rows
        columns = [(f"noisy input, s = {s0}", outputs.noisy[s0], rows[s0]),
                   (f"ground truth, s = {s0}", outputs.clean[s0], rows[s0])]
        columns += [(f"s = {s}, reg = {reg:g}", outputs.recon[s, reg], rows[s]) for s, reg in figure_models]
        captions = outputs.captions
        caption = "\n".join([captions["header"], *(captions[key] for key in figure_models), captions["data"]])
        plotting.comparison_figure(output_dir / f"{name}.png", columns, f"{title}, preset {preset}", caption)


def _write_training_figure(path, models, preset):
    """training.png from the trainer's logs next to the weights (none for downloaded weights)."""
    logs = {}
    for model in models:
        if model.reg in TRAINING_FIGURE_REGS and model.files.log.is_file():
            with open(model.files.log, newline="") as file:
                logs[f"s = {model.scaling}, reg = {model.reg:g}"] = list(csv.DictReader(file))
    if logs:
        plotting.training_figure(path, logs, f"Training of preset {preset}: test loss and edge sharpness",
                                 f"logs: {models[0].folder}/*.csv (the trainer's, one row per epoch)")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, as for every other user error, and exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None):
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                        help="the default weights folder, and the values of weights files without a config beside them "
                        "(the authors' Zenodo files) (default: paper)")
    parser.add_argument("--weights-dir",
                        help="folder of the checkpoints: any folder unet_circles.py wrote, or the authors' files "
                        "(default: where unet_circles.py writes the preset's)")
    parser.add_argument("--output-dir",
                        help=f"where results go (default: {OUTPUT_DIR} for paper, data/results/<preset> for another)")
    parser.add_argument("--circles-csv", help="the authors' circles CSV instead of the seeded data set")
    parser.add_argument("--no-download", action="store_true", help="use local weights only, never Zenodo")
    parser.add_argument("--zenodo-url", default=os.environ.get("ZENODO_URL", zenodo.ZENODO_URL),
                        help="Zenodo's base address (default: $ZENODO_URL, else %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="auto: cuda if available, else mps, else cpu")
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 autocast (for GPUs and CPUs with native bfloat16; emulated and far slower on "
                        "AVX2-only CPUs)")
    parser.add_argument("--eager", action="store_true",
                        help="run each network module by module as defined (the reference), not the default fast "
                        "float32 path with BatchNorm and /s^2 folded into the convolutions and, on the CPU, the s = 3 "
                        "network's wide 9 x 9 convolutions by FFT (equal up to float32 rounding)")
    args = parser.parse_args(argv)
    try:
        weights_dir = args.weights_dir or preset_config(args.preset).out_dir
        if args.weights_dir and not Path(args.weights_dir).is_dir():
            raise EvaluationError(f"the weights folder {args.weights_dir} does not exist")
        download_from = args.zenodo_url if args.preset == "paper" and not args.no_download else None
        output_dir = args.output_dir or (OUTPUT_DIR if args.preset == "paper" else f"data/results/{args.preset}")
        evaluate(weights_dir, args.preset, output_dir, args.circles_csv, download_from, args.eager, args.device,
                 args.amp)
    except (EvaluationError, RunFolderError, CheckpointError, CirclesFileError, DeviceError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except zenodo.ZenodoError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
