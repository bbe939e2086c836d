"""The deep image prior, run as a user runs it on tiny sizes: the phantom, the input, fitting, kill and resume,
bad flags."""

import csv
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ENV

from deep_image_prior import Config, base_input, blocks, build_parser, config_from_args, fit_path, main, perturbation
from utils import metrics, phantom
from utils.config import field_help
from utils.weights import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
AUTHORS_PHANTOM = Path(__file__).parent / "data" / "authors_phantom.npz"  # the authors' phantom.npy, compressed
# 16 px, a U-net of width 8 and depth 1 with a 4-channel input, its output averaged over fewer iterates than
# DIP's 0.99 so that 150 iterations show progress: a second or two per s.
TINY = ["--size-orig", "16", "--width", "8", "--depth", "1", "--input-channels", "4", "--iterations", "150",
        "--ema", "0.9", "--checkpoint-every", "10", "--scalings", "1", "2", "--weight-decays", "0", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def config_of(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def summary(folder):
    with open(folder / "metrics_summary.csv") as file:
        return list(csv.DictReader(file))


def curve(folder, scaling, reg=0.0):
    with open(fit_path(config_of(*TINY, "--output-dir", str(folder)), scaling, reg, ".csv")) as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]


# ----------------------------------------------------------------------------------------------
# The phantom
# ----------------------------------------------------------------------------------------------


def test_pixel_centres_cut_the_authors_field_of_view_and_nest_across_resolutions():
    # At 8 px the centres are (2i - 7) / 8 * 256 / 255: +-0.1255, +-0.3765, +-0.6275, +-0.8784.
    assert phantom.pixel_centres(8) == pytest.approx(np.array([-7, -5, -3, -1, 1, 3, 5, 7]) / 8 * 256 / 255)
    # At 256 px they are the authors' points -1 + 2i / 255.
    assert phantom.pixel_centres(256) == pytest.approx(np.linspace(-1, 1, 256), abs=1e-15)
    # Each pixel at N * 2 is a half of a pixel at N: the same field of view sampled finer.
    fine, coarse = phantom.pixel_centres(24), phantom.pixel_centres(12)
    assert (fine[0::2] + fine[1::2]) / 2 == pytest.approx(coarse, abs=1e-15)


def test_ellipses_cover_the_hand_counted_pixels():
    # A disc of radius 0.5 at 8 px: the centres (+-0.13, +-0.13) and (+-0.13, +-0.38) both ways lie inside
    # (0.13^2 + 0.38^2 = 0.16 <= 0.25), (+-0.38, +-0.38) not (0.28): a plus of 12 pixels.
    disc = phantom.rasterise(8, [(1.0, 0.5, 0.5, 0.0, 0.0, 0)])
    expected = np.zeros((8, 8))
    expected[3:5, 2:6] = expected[2:6, 3:5] = 1
    assert np.array_equal(disc, expected)
    # A flat ellipse (half-axes 0.8 along x, 0.3 along y): rows 3 and 4, columns 1 to 6 (|x| <= 0.73).
    flat = phantom.rasterise(8, [(0.5, 0.8, 0.3, 0.0, 0.0, 0)])
    assert np.argwhere(flat).tolist() == [[r, c] for r in (3, 4) for c in range(1, 7)]
    # Rotated by 90 degrees it stands: columns 3 and 4, rows 1 to 6; moved right by 0.25, one column on.
    assert np.array_equal(phantom.rasterise(8, [(0.5, 0.8, 0.3, 0.0, 0.0, 90)]), flat.T)
    assert np.array_equal(phantom.rasterise(8, [(0.5, 0.8, 0.3, 0.25, 0.0, 90)])[:, 4:6], flat.T[:, 3:5])
    # Overlapping ellipses add: the disc plus the flat ellipse has 1.5 where both cover.
    both = phantom.rasterise(8, [(1.0, 0.5, 0.5, 0.0, 0.0, 0), (0.5, 0.8, 0.3, 0.0, 0.0, 0)])
    assert np.array_equal(both, disc + flat) and (both == 1.5).sum() == 8


def test_the_phantom_at_256_px_is_the_authors_file_bit_for_bit_with_their_levels():
    authors = np.load(AUTHORS_PHANTOM)["phantom"][0]  # (256, 256) float64
    ours = phantom.rasterise(256)
    assert np.array_equal(ours, authors)  # every pixel, including the -5.6e-17 of 1 - 0.8 - 0.2
    assert (ours == 1 - 0.8 - 0.2).sum() == 5003  # the two dark ellipses inside the brain
    values, counts = np.unique(ours.round(6) + 0.0, return_counts=True)
    expected = {0.0: 33124 + 5003, 0.1: 91, 0.2: 21579, 0.3: 2841, 0.4: 52, 1.0: 2846}
    assert dict(zip(values, counts, strict=True)) == expected
    for size in (64, 128, 192):
        assert np.unique(phantom.levels(size)).tolist() == np.float32([0, 0.1, 0.2, 0.3, 0.4, 1]).tolist()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_jump_of_the_phantom_counts_as_an_edge_despite_rounding(dtype):
    # The levels in float64 (0.3 - 0.2 is 0.09999999999999998) and in float32 (0.4 - 0.3 is 0.099999994).
    truth = np.round(phantom.rasterise(64), 6).astype(dtype)
    rows, cols, before, after = metrics.find_edges(truth, 1)
    # By hand: per row, every step of at least 0.1 (to 6 decimals) with no other step within 3 pixels
    # and its window of 4 pixels each side inside the image.
    steps = np.round(np.diff(truth.astype(np.float64), axis=1), 6)
    expected = [(r, j) for r in range(64) for j in range(3, 59)
                if abs(steps[r, j]) >= 0.1 and np.count_nonzero(steps[r, j - 3 : j + 4]) == 1]
    assert list(zip(rows.tolist(), cols.tolist(), strict=False)) == expected
    pairs = {(round(float(a), 6), round(float(b), 6)) for a, b in zip(before, after, strict=False)}
    assert {(0.2, 0.3), (0.3, 0.2), (0.0, 0.2), (0.2, 0.0)} <= pairs


# ----------------------------------------------------------------------------------------------
# The input: one function at every s
# ----------------------------------------------------------------------------------------------


def test_the_input_at_s_2_is_the_s_1_input_repeated_over_2_x_2_blocks():
    config = config_of(*TINY)
    one, two = blocks(base_input(config), 1), blocks(base_input(config), 2)
    assert one.shape == (1, 4, 16, 16) and two.shape == (1, 4, 32, 32)
    for dy in (0, 1):
        for dx in (0, 1):
            assert torch.equal(two[..., dy::2, dx::2], one)
    assert 0 <= one.min() and one.max() < 0.1 and one.std() > 0.02  # uniform on [0, 0.1): not a constant
    # The perturbation too, and it is a new draw every iteration.
    assert torch.equal(blocks(perturbation(config, 7), 2)[..., 1::2, ::2], perturbation(config, 7))
    assert not torch.equal(perturbation(config, 7), perturbation(config, 8))
    assert perturbation(config, 7).std() == pytest.approx(1 / 30, rel=0.1)


# ----------------------------------------------------------------------------------------------
# Fitting, results, kill and resume
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """The tiny configuration fitted once, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("a")
    main([*TINY, "--output-dir", str(out)])
    return out


def test_a_tiny_fit_lowers_its_loss_and_writes_the_results(run_a):
    for s in (1, 2):
        rows = curve(run_a, s)
        assert [row["iteration"] for row in rows] == list(range(1, 151))
        assert rows[-1]["loss"] < 0.6 * rows[0]["loss"]
        assert max(row["psnr"] for row in rows) > rows[0]["psnr"] + 2
    table = summary(run_a)
    assert [(r["scaling"], r["kind"], r["reg"]) for r in table] == [  # the U-net summary's names of the references
        (s, kind, reg) for s in "12"
        for kind, reg in (("", "ground_truth"), ("", "noisy_input"), ("best", "0"), ("final", "0"))]
    truth, best, final = table[0], table[2], table[3]
    assert (float(truth["jump_ratio"]), float(truth["rise_width_px"]), truth["psnr"]) == (1.0, 0.8, "inf")
    assert int(truth["n_edges"]) >= 1 and truth["n_images"] == "1"
    assert final["iteration"] == "150" and 1 <= int(best["iteration"]) <= 150
    assert float(best["psnr"]) >= float(final["psnr"])
    assert float(best["psnr"]) == pytest.approx(max(row["psnr"] for row in curve(run_a, 1)), abs=1e-3)
    arrays = np.load(run_a / "arrays" / "scaling2.npz")
    assert arrays["final_reg0"].shape == (32, 32) and arrays["final_reg0"].std() > 0.05  # the output follows the image
    for name in ("comparison_best.png", "comparison_final.png", "psnr.png"):
        assert (run_a / name).stat().st_size > 10_000


def test_intervals_resample_blocks_of_rows_of_one_image():
    truth = phantom.levels(64)
    blurred = (truth + np.roll(truth, 1, axis=1)) / 2  # every edge a ramp of two steps: jump ratio 1/2
    whole = metrics.set_summary(blurred[None], truth[None], 1)
    blockwise = metrics.set_summary(blurred[None], truth[None], 1, row_block=3)
    assert whole["jump_ratio"] == blockwise["jump_ratio"] == 0.5
    assert whole["rise_width_px_low"] == whole["rise_width_px_high"]  # one image: one group, no interval
    truth_rows = metrics.find_edges(truth, 1)[0]
    assert len(np.unique(truth_rows // 3)) > 10  # many blocks to resample


def test_a_fit_killed_midway_resumes_to_the_uninterrupted_result(run_a, tmp_path):
    cmd = [sys.executable, "deep_image_prior.py", *TINY, "--output-dir", str(tmp_path)]
    run = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in run.stdout:
        if "iteration 10/150" in line:
            run.send_signal(signal.SIGTERM)
            break
    assert "s=1 reg=0: stopped after iteration" in run.stdout.read()
    assert run.wait(timeout=60) == 128 + signal.SIGTERM
    config = config_of(*TINY, "--output-dir", str(tmp_path))
    assert 10 <= load_checkpoint(fit_path(config, 1, 0.0, ".state.pt"))["progress"]["done"] < 150  # really midway
    resumed = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at iteration" in resumed.stdout
    for s in (1, 2):
        a = load_checkpoint(fit_path(config_of(*TINY, "--output-dir", str(run_a)), s, 0.0, ".state.pt"))
        b = load_checkpoint(fit_path(config, s, 0.0, ".state.pt"))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert torch.equal(a["progress"]["average"], b["progress"]["average"])
        assert a["progress"]["psnrs"] == b["progress"]["psnrs"]
    assert summary(tmp_path) == summary(run_a)
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # no half-written files


def test_a_state_of_other_values_is_an_error_and_fresh_starts_over(run_a, tmp_path, capsys):
    import shutil

    shutil.copytree(run_a, tmp_path / "run")
    with pytest.raises(SystemExit) as exit:
        main([*TINY, "--lr", "0.02", "--output-dir", str(tmp_path / "run")])
    assert exit.value.code == 2
    assert "was made with lr = 0.01, this command has 0.02; use --fresh" in capsys.readouterr().err
    main([*TINY, "--lr", "0.02", "--scalings", "1", "--iterations", "5", "--fresh",
          "--output-dir", str(tmp_path / "run")])
    assert len(curve(tmp_path / "run", 1)) == 5


def test_a_rerun_may_change_which_fits_run_and_the_cut_but_not_the_fit(run_a):
    from deep_image_prior import read_state
    from utils.config import ConfigError

    same_fit = config_of(*TINY, "--output-dir", str(run_a), "--cut-height", "-0.3", "--checkpoint-every", "7",
                         "--scalings", "1")
    assert read_state(same_fit, 1, 0.0)["progress"]["done"] == 150
    with pytest.raises(ConfigError, match="was made with ema = 0.9, this command has 0.99"):
        read_state(config_of(*TINY, "--output-dir", str(run_a), "--ema", "0.99"), 1, 0.0)


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


def test_every_field_has_a_flag_and_the_presets_differ_where_they_say():
    assert set(field_help(Config)) == {f.name for f in Config.__dataclass_fields__.values()}
    quick = config_of("--preset", "quick")
    assert (quick.size_orig, quick.width, quick.depth, quick.output_dir) == (64, 16, 3, "data/results/dip/quick")
    assert config_of("--preset", "quick", "--weight-decays", "0", "1e-3").weight_decays == (0.0, 1e-3)
    paper = config_of()
    assert paper.iterations == 3000 and paper.lr == 0.01 and paper.input_noise == pytest.approx(1 / 30)


BAD_INPUTS = [  # (flags, the start of the sentence on stderr)
    (["--iterations", "0"], "--iterations must be >= 1, got 0"),
    (["--weight-decays", "0", "-0.1"], "weight decays must be >= 0, got 0.0 -0.1"),
    (["--scalings", "0"], "every scaling must be >= 1"),
    (["--depth", "5"], "--size-orig 16 must be divisible by 2^depth = 32"),
    (["--ema", "1"], "--ema must be in [0, 1), got 1.0"),
    (["--input-noise", "-1"], "--sigma-noise, --input-scale and --input-noise must be >= 0"),
    (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["--iterations", "two"], "argument --iterations: invalid int value: 'two'"),
    (["--learning-rate", "1"], "unrecognized arguments: --learning-rate"),
]


@pytest.mark.parametrize("flags, message", BAD_INPUTS, ids=[" ".join(f) for f, _ in BAD_INPUTS])
def test_bad_flags_are_one_sentence_and_exit_2_before_any_file(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*TINY, "--output-dir", str(tmp_path / "run"), *flags])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"deep_image_prior.py: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_an_output_folder_under_a_file_is_refused_by_a_real_process(tmp_path):
    (tmp_path / "file").write_text("")
    run = subprocess.run([sys.executable, "deep_image_prior.py", *TINY, "--output-dir", str(tmp_path / "file" / "run")],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr == (f"deep_image_prior.py: error: output folder {tmp_path / 'file' / 'run'} cannot be made "
                          f"because {tmp_path / 'file'} is a file; choose another --output-dir\n")
