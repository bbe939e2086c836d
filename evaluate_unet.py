"""Evaluate the U-nets of unet_circles.py: the paper's two comparison figures, raw arrays and edge metrics.

Every model of the preset's weight-decay table whose checkpoint exists is run once on the paper's
five test samples. For the `paper` preset, a checkpoint a figure needs and that is missing is
downloaded from the authors' Zenodo record; other presets use what unet_circles.py wrote.

    python evaluate_unet.py                     # the published weights (six files, about 1.2 GB)
    python evaluate_unet.py --preset quick      # after: python unet_circles.py --preset quick

Writes into --output-dir: comparison_weight_decays.png, comparison_resolutions.png, regularity.png,
metrics.csv, single/ (every image and cut as a PNG) and arrays/ (the raw images, one .npz per
sample and s).
"""

import argparse
import csv
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.trunks import UNet, fold_for_inference
from unet_circles import PRESETS, ConfigError, autocast, model_path, pick_device, preset_config, weights_path
from utils import metrics, plotting, zenodo
from utils.circles import CirclesFileError, load_circles_csv, noisy_pairs, sample_circles, split
from utils.weights import CheckpointError, load_state_dict

# ----------------------------------------------------------------------------------------------
# Evaluation settings: the paper's (PAPER.md, "Evaluation").
# ----------------------------------------------------------------------------------------------
TEST_SAMPLES = (597, 1675, 982, 545, 1923)  # indices into the test split, in the paper's order
CUT_ROWS = (10, 20, 65, 122, 55)  # each sample's cut row at s = 1 in a CUT_BASE px image
CUT_BASE = 128  # at another size_orig the row moves to the same height: row * size_orig // CUT_BASE
FIGURES = {  # file name -> (title, the (s, reg) of its model columns)
    "comparison_weight_decays": ("U-net outputs for different weight decays (s = 1)", ((1, 0.0), (1, 1e-3), (1, 1e-2), (1, 1e-1))),
    "comparison_resolutions": ("U-net outputs at different resolutions (reg = 0.001)", ((1, 1e-3), (2, 1e-3), (3, 1e-3))),
}
TRAINING_FIGURE_REGS = (1e-3, 0.0)  # training.png: every s at these regs, from the trainer's logs
NOISE_SEED = 0  # the noisy inputs at scaling s are drawn with seed NOISE_SEED + s
OUTPUT_DIR = "data/results/unet"  # default of --output-dir for the paper; another preset: data/results/<preset>
PROG = "evaluate_unet.py"


class EvaluationError(ValueError):
    """A problem the user can fix (missing weights, a folder that cannot be written); one sentence."""


@torch.inference_mode()
def evaluate(config, preset, output_dir=OUTPUT_DIR, circles_csv=None, zenodo_url=None, eager=False):
    """Run the preset's available models on the test samples and write every output; returns metrics.csv's rows.

    From the config: the sizes, the weights folder (out_dir), device and amp (bfloat16 autocast).
    zenodo_url: where missing figure weights are downloaded from (the paper preset); None: local files only.
    eager: run each network module by module as defined, instead of the default fast float32 path
    (BatchNorm and the divisions by s^2 folded into the convolutions, channels-last memory format, and
    on the CPU the s = 3 network's wide 9 x 9 convolutions by FFT), which computes the same function up
    to float32 rounding.
    """
    output_dir, device = Path(output_dir), pick_device(config.device)
    if config.amp and device.type == "cpu":
        print("--amp on the CPU: without native bfloat16 support (e.g. AVX2 only) bfloat16 convolutions run far "
              "slower than float32 (125x for the paper's s = 1 network on such a CPU); --amp is meant for GPUs",
              file=sys.stderr)
    _make_writable_folder(output_dir)
    test, data_note = _test_samples(config, circles_csv)  # (5, 5, 4)
    needed = sorted({model for _, models in FIGURES.values() for model in models})
    for s, reg in needed:
        if reg not in config.weight_decays.get(s, ()):
            raise EvaluationError(f"preset {preset} trains no model at s = {s}, reg = {reg:g}, which the figures need")
    missing = [weights_path(config, s, reg) for s, reg in needed if not weights_path(config, s, reg).is_file()]
    if missing and zenodo_url:
        _download(missing, zenodo_url)
    elif missing:
        raise EvaluationError(_missing_message(missing, preset))
    models = [(s, reg) for s in sorted(config.weight_decays) for reg in config.weight_decays[s]
              if weights_path(config, s, reg).is_file()]
    # Which checkpoint made each output, and whether it is verifiably the authors' published file.
    weights_header = f"weights: preset {preset}, folder {config.out_dir}"
    weights_lines = {(s, reg): f"  s = {s}, reg = {reg:g}: {weights_path(config, s, reg).name} "
                               f"({_source(weights_path(config, s, reg))})" for s, reg in models}
    print("\n".join([weights_header, *weights_lines.values()]))

    # One noisy input per (sample, s), shared by every model at that s (the authors drew anew per model).
    noisy, clean, outputs = {}, {}, {}
    for s in sorted({s for s, _ in models}):
        generator = torch.Generator().manual_seed(NOISE_SEED + s)
        noisy[s], clean[s] = noisy_pairs(test, config.size_orig * s, generator, config.sigma_noise)  # (5, 1, N, N)
        for reg in [reg for t, reg in models if t == s]:
            outputs[s, reg] = _run_model(config, s, reg, noisy[s], device, eager)  # (5, 1, N, N)

    # From here on numpy: (5, N, N) float32 per s and model.
    noisy = {s: x[:, 0].numpy() for s, x in noisy.items()}
    clean = {s: x[:, 0].numpy() for s, x in clean.items()}
    outputs = {key: x[:, 0].numpy() for key, x in outputs.items()}
    cut_rows = {s: [row * config.size_orig // CUT_BASE * s for row in CUT_ROWS] for s in noisy}
    rows = _write_metrics(output_dir / "metrics.csv", clean, outputs)
    _write_arrays(output_dir / "arrays", noisy, clean, outputs)
    _write_singles(output_dir / "single", noisy, clean, outputs, cut_rows)
    for name, (title, figure_models) in FIGURES.items():
        s0 = figure_models[0][0]  # inputs are shown at the first column's resolution
        columns = [(f"noisy input, s = {s0}", noisy[s0], cut_rows[s0]), (f"ground truth, s = {s0}", clean[s0], cut_rows[s0])]
        columns += [(f"s = {s}, reg = {reg:g}", outputs[s, reg], cut_rows[s]) for s, reg in figure_models]
        caption = "\n".join([weights_header] + [weights_lines[model] for model in figure_models] + data_note)
        plotting.comparison_figure(output_dir / f"{name}.png", columns, f"{title}, preset {preset}", caption)
    plotting.regularity_figure(output_dir / "regularity.png", rows, f"Edge sharpness of the U-net outputs, preset {preset}",
                               "\n".join([weights_header, *weights_lines.values(), *data_note]))
    _write_training_figure(output_dir / "training.png", config, preset, models)
    print(f"wrote the figures, metrics.csv, single/ and arrays/ into {output_dir}")
    return rows


def _write_training_figure(path, config, preset, models):
    """training.png from the trainer's logs next to the weights (none for downloaded weights)."""
    logs = {}
    for s, reg in models:
        log = model_path(config, s, reg, ".csv")
        if reg in TRAINING_FIGURE_REGS and log.is_file():
            with open(log, newline="") as file:
                logs[f"s = {s}, reg = {reg:g}"] = list(csv.DictReader(file))
    if logs:
        plotting.training_figure(path, logs, f"Training of preset {preset}: test loss and edge sharpness",
                                 f"logs: {config.out_dir}/*.csv (the trainer's, one row per epoch)")


def _make_writable_folder(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise EvaluationError(f"cannot write to the output folder {folder} ({err.strerror}); choose another with --output-dir") from None


def _test_samples(config, circles_csv):
    """The paper's test samples (5, 5, 4) as a tensor, and caption lines saying where they come from."""
    if circles_csv:
        params, origin = load_circles_csv(circles_csv), f"circles from {circles_csv}"
    else:
        params = sample_circles(config.n_samples, seed=config.data_seed)
        origin = f"the seeded circles data set (n_samples {config.n_samples}, data_seed {config.data_seed})"
    test = split(params)[1]
    if len(test) <= max(TEST_SAMPLES):
        raise EvaluationError(
            f"{origin} has {len(params)} samples, too few for test sample {max(TEST_SAMPLES)} "
            f"of its last 20% (the paper's data set has 10,000)"
        )
    note = [
        f"data: {origin}, test samples {', '.join(map(str, TEST_SAMPLES))};",
        f"noise: sigma_noise {config.sigma_noise}, seed {NOISE_SEED} + s, one draw per sample and s shared by all models",
    ]
    return torch.as_tensor(test[list(TEST_SAMPLES)]), note


def _download(paths, zenodo_url):
    """Fetch the missing paper checkpoints from Zenodo; a failure to connect says how to go on without."""
    folder = paths[0].parent
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EvaluationError(f"cannot create the weights folder {folder} ({err.strerror}); choose another with --weights-dir") from None
    try:
        zenodo.fetch([path.name for path in paths], folder, zenodo_url)
    except zenodo.ZenodoUnreachable as err:
        if created and not any(folder.iterdir()):  # nothing came: leave no empty folder behind
            folder.rmdir()
        raise zenodo.ZenodoUnreachable(
            f"{err}; put {', '.join(path.name for path in paths)} from https://zenodo.org/records/{zenodo.RECORD} "
            f"into {folder} by hand, or see the effect offline with the quick preset's shipped weights: "
            f"python evaluate_unet.py --preset quick"
        ) from None


def _missing_message(missing, preset):
    more = f" (and {len(missing) - 1} more the figures need)" if len(missing) > 1 else ""
    if preset == "paper":
        how = f"drop --no-download to fetch it from Zenodo record {zenodo.RECORD}, or put it there by hand"
    else:
        how = f"make it with `python unet_circles.py --preset {preset}`"
    return f"weights file {missing[0]} is missing{more}; {how}"


def _run_model(config, scaling, reg, noisy, device, eager):
    """Load one checkpoint (strictly, weights only) and run the whole batch through it once."""
    start = time.perf_counter()
    path = weights_path(config, scaling, reg)
    model = load_state_dict(UNet(scaling, config.width, config.depth), path).eval()
    x = noisy.to(device)
    if not eager:  # the fast path: fewer passes over every feature map, channels-last, FFT where faster
        model = fold_for_inference(model, fft=device.type == "cpu").to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(config, device):
        output = model.to(device)(x)  # (5, 1, N, N)
    output = output.float().cpu()
    print(f"s = {scaling}, reg = {reg:g}: {path.name}, {len(noisy)} images in {time.perf_counter() - start:.1f} s")
    return output


def _source(path):
    return f"Zenodo record {zenodo.RECORD}, MD5 verified" if zenodo.from_record(path) else "local file"


def _write_metrics(path, clean, outputs):
    """metrics.csv: one row per (sample, s, reg), ground-truth rows first as the reference."""
    rows = []
    for i in range(len(TEST_SAMPLES)):
        for s in sorted(clean):
            regs = sorted(reg for t, reg in outputs if t == s)
            images = [(metrics.GROUND_TRUTH, clean[s])] + [(reg, outputs[s, reg]) for reg in regs]
            for reg, image in images:
                rows.append(dict(sample=i, scaling=s, reg=reg, **metrics.summary(image[i], clean[s][i], s)))
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(list(rows[0]))
        for row in rows:
            writer.writerow([_format(value) for value in row.values()])
    return rows


def _format(value):
    """Numbers as in the weight-decay table (0.001, not 1e-03), at most 6 significant digits."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _write_arrays(folder, noisy, clean, outputs):
    folder.mkdir(exist_ok=True)
    for s in noisy:
        for i in range(len(noisy[s])):
            recons = {f"recon_reg{reg:g}": x[i] for (t, reg), x in outputs.items() if t == s}
            np.savez(folder / f"sample{i}_scaling{s}.npz", noisy=noisy[s][i], ground_truth=clean[s][i], **recons)


def _write_singles(folder, noisy, clean, outputs, cut_rows):
    """Every image and its cut as PNGs, on one grey scale per (sample, s)."""
    folder.mkdir(exist_ok=True)
    cuts = []
    for s in noisy:
        images = [("noisy", noisy[s]), ("ground_truth", clean[s])]
        images += [(f"recon_reg{reg:g}", x) for (t, reg), x in outputs.items() if t == s]
        for i, row in enumerate(cut_rows[s]):
            low, high = plotting.value_range([x[i] for _, x in images])
            for name, x in images:
                stem = folder / f"sample{i}_scaling{s}_{name}"
                plotting.save_image(f"{stem}.png", x[i], low, high)
                cuts.append((f"{stem}_cut.png", x[i][row], low, high, f"sample {i}, s = {s}, {name}, row {row}"))
    plotting.save_cuts(cuts)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, as for every other user error, and exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None):
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="whose weights and sizes (default: paper)")
    parser.add_argument("--weights-dir", help="folder of the checkpoints (default: where unet_circles.py writes the preset's)")
    parser.add_argument("--output-dir", help=f"where results go (default: {OUTPUT_DIR} for paper, data/results/<preset> for another)")
    parser.add_argument("--circles-csv", help="the authors' circles CSV instead of the seeded data set")
    parser.add_argument("--no-download", action="store_true", help="use local weights only, never Zenodo")
    parser.add_argument("--zenodo-url", default=os.environ.get("ZENODO_URL", zenodo.ZENODO_URL),
                        help="Zenodo's base address (default: $ZENODO_URL, else %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="auto: cuda if available, else mps, else cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (for GPUs; slow on most CPUs)")
    parser.add_argument("--eager", action="store_true",
                        help="run each network module by module as defined (the reference), not the default fast float32 "
                        "path with BatchNorm and /s^2 folded into the convolutions and, on the CPU, the s = 3 "
                        "network's wide 9 x 9 convolutions by FFT (equal up to float32 rounding)")
    args = parser.parse_args(argv)
    config = dataclasses.replace(preset_config(args.preset), device=args.device, amp=args.amp)
    try:
        if args.weights_dir:
            if not Path(args.weights_dir).is_dir():
                raise EvaluationError(f"the weights folder {args.weights_dir} does not exist")
            config = dataclasses.replace(config, out_dir=args.weights_dir)
        download_from = args.zenodo_url if args.preset == "paper" and not args.no_download else None
        output_dir = args.output_dir or (OUTPUT_DIR if args.preset == "paper" else f"data/results/{args.preset}")
        evaluate(config, args.preset, output_dir, args.circles_csv, download_from, args.eager)
    except (EvaluationError, ConfigError, CheckpointError, CirclesFileError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except zenodo.ZenodoError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
