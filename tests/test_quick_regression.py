"""The shipped quick-preset weights show the paper's effect (orderings, not copied numbers).

Runs what a user runs first, `python evaluate_unet.py --preset quick`, through evaluate() on the
weights in data/weights/quick, and checks the README's claims: at reg 1e-3 the median jump ratio
falls and the median rise width in pixels grows from s = 1 to 2 to 3, while the ground truth's
ratio stays 1; at s = 1 the largest weight decay gives smoother outputs than none.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from evaluate_unet import evaluate
from unet_circles import model_files, preset_config
from utils.metrics import GROUND_TRUTH

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    config = preset_config("quick")
    config = dataclasses.replace(config, out_dir=str(ROOT / config.out_dir))
    missing = [model_files(config, s, reg).weights() for s, regs in config.weight_decays.items() for reg in regs
               if not model_files(config, s, reg).weights().is_file()]
    assert not missing, f"shipped quick weights missing: {missing}"
    return evaluate(config.out_dir, "quick", tmp_path_factory.mktemp("quick"), device="cpu")


def median(rows, key, scaling, reg):
    return float(np.median([r[key] for r in rows if r["scaling"] == scaling and r["reg"] == reg]))


def test_resolution_effect_at_reg_1e3(rows):
    ratios = [median(rows, "jump_ratio", s, 1e-3) for s in (1, 2, 3)]
    widths = [median(rows, "rise_width_px", s, 1e-3) for s in (1, 2, 3)]
    assert ratios[0] > ratios[1] > ratios[2], ratios
    assert widths[0] < widths[1] < widths[2], widths
    assert [median(rows, "jump_ratio", s, GROUND_TRUTH) for s in (1, 2, 3)] == [1.0, 1.0, 1.0]


def test_resolution_effect_without_weight_decay(rows):
    ratios = [median(rows, "jump_ratio", s, 0.0) for s in (1, 2, 3)]
    assert ratios[0] > ratios[1] > ratios[2], ratios


def test_strong_weight_decay_smooths_at_s1(rows):
    assert median(rows, "jump_ratio", 1, 1.25) < median(rows, "jump_ratio", 1, 0.0)
    assert median(rows, "psnr", 1, 1.25) < median(rows, "psnr", 1, 0.0)
