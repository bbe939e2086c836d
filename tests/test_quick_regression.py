"""The shipped quick-preset weights denoise and show the paper's effect (orderings and references, not copied numbers).

Runs what a user runs first, `python evaluate_unet.py --preset quick`, through evaluate() on the weights in
data/weights/quick, and checks the README's claims on the summary over 256 held-out test images: at s = 1
every model with reg <= 1e-2 beats its noisy input in interior PSNR and keeps a median jump ratio of at least
0.7; with and without weight decay the jump ratio falls and the rise width in pixels grows from s = 1 to 2
to 3, while the ground truth's ratio stays 1; the largest weight decay smooths more than none.
"""

from pathlib import Path

import pytest

from evaluate_unet import evaluate
from unet_circles import model_files, preset_config
from utils.metrics import GROUND_TRUTH, NOISY_INPUT

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    config = preset_config("quick")
    folder = ROOT / config.out_dir
    missing = [model_files(config, s, reg).weights().name for s, regs in config.weight_decays.items() for reg in regs
               if not (folder / model_files(config, s, reg).weights().name).is_file()]
    assert not missing, f"shipped quick weights missing: {missing}"
    return {(row["scaling"], row["reg"]): row for row in evaluate(folder, "quick", tmp_path_factory.mktemp("quick"),
                                                                    device="cpu")}


def test_every_s1_model_up_to_reg_1e2_beats_its_noisy_input_and_keeps_its_edges(summary):
    noisy = summary[1, NOISY_INPUT]
    assert noisy["n_images"] == 256
    for reg in (0.0, 1e-3, 1e-2):
        row = summary[1, reg]
        assert row["psnr_interior_low"] > noisy["psnr_interior"], reg  # the whole interval above the input's median
        assert row["jump_ratio"] >= 0.7, reg


@pytest.mark.parametrize("reg", [0.0, 1e-3])
def test_edges_spread_over_more_pixels_at_finer_resolution(summary, reg):
    ratios = [summary[s, reg]["jump_ratio"] for s in (1, 2, 3)]
    widths = [summary[s, reg]["rise_width_px"] for s in (1, 2, 3)]
    assert ratios[0] > ratios[1] > ratios[2], ratios
    assert widths[0] < widths[1] < widths[2], widths
    assert [summary[s, GROUND_TRUTH]["jump_ratio"] for s in (1, 2, 3)] == [1.0, 1.0, 1.0]


def test_strong_weight_decay_smooths_at_s1(summary):
    assert summary[1, 1.25]["jump_ratio_high"] < summary[1, 0.0]["jump_ratio_low"]
