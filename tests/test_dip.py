"""The deep image prior, run as a user runs it on tiny sizes: the phantom, the input, fitting over seeds, the rule that
ends a fit, the weight decay Adam gets, kill and resume, the pooled summary, bad flags."""

import csv
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ENV

from deep_image_prior import (
    Config,
    Fit,
    base_input,
    blocks,
    build_parser,
    collect,
    config_from_args,
    end_of,
    finished,
    fit_path,
    main,
    per_seed_rows,
    perturbation,
    planned,
    pooled,
    start_fit,
    summary_rows,
)
from utils import metrics, phantom
from utils.config import field_help
from utils.weights import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
AUTHORS_PHANTOM = Path(__file__).parent / "data" / "authors_phantom.npz"  # the authors' phantom.npy, compressed
# 16 px, a U-net of width 8 and depth 1 with a 4-channel input, its output averaged over fewer iterates than
# DIP's 0.99 so that 150 iterations show progress: a second or two per s. Every fit runs all 150 (--stop-drop 0).
TINY = ["--size-orig", "16", "--width", "8", "--depth", "1", "--input-channels", "4", "--iterations", "150",
        "--ema", "0.9", "--checkpoint-every", "10", "--scalings", "1", "2", "--weight-decays", "0", "--device", "cpu",
        "--stop-drop", "0"]
SEEDS = ["--seeds", "0", "1"]  # the module's run: two seeds


pytestmark = pytest.mark.usefixtures("one_thread")


def config_of(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def summary(folder, name="metrics_summary.csv"):
    with open(folder / name) as file:
        return list(csv.DictReader(file))


def curve(folder, scaling, reg=0.0, seed=0):
    with open(fit_path(config_of(*TINY, "--output-dir", str(folder)), Fit(seed, scaling, reg), ".csv")) as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]


def state(folder, seed, scaling, reg=0.0):
    config = config_of(*TINY, "--output-dir", str(folder))
    return load_checkpoint(fit_path(config, Fit(seed, scaling, reg), ".state.pt"))


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
    one, two = blocks(base_input(config, 0), 1), blocks(base_input(config, 0), 2)
    assert one.shape == (1, 4, 16, 16) and two.shape == (1, 4, 32, 32)
    for dy in (0, 1):
        for dx in (0, 1):
            assert torch.equal(two[..., dy::2, dx::2], one)
    assert 0 <= one.min() and one.max() < 0.1 and one.std() > 0.02  # uniform on [0, 0.1): not a constant
    # The perturbation too, and it is a new draw every iteration.
    assert torch.equal(blocks(perturbation(config, 0, 7), 2)[..., 1::2, ::2], perturbation(config, 0, 7))
    assert not torch.equal(perturbation(config, 0, 7), perturbation(config, 0, 8))
    assert perturbation(config, 0, 7).std() == pytest.approx(1 / 30, rel=0.1)
    # Another seed draws another input and other perturbations.
    assert not torch.equal(base_input(config, 1), base_input(config, 0))
    assert not torch.equal(perturbation(config, 1, 7), perturbation(config, 0, 7))


# ----------------------------------------------------------------------------------------------
# Fitting, results, kill and resume
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """The tiny configuration fitted once with two seeds, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("a")
    main([*TINY, *SEEDS, "--output-dir", str(out)])
    return out


def test_a_tiny_fit_lowers_its_loss_and_writes_the_results(run_a):
    for s in (1, 2):
        rows = curve(run_a, s)
        assert [row["iteration"] for row in rows] == list(range(1, 151))
        assert rows[-1]["loss"] < 0.6 * rows[0]["loss"]
        assert max(row["psnr"] for row in rows) > rows[0]["psnr"] + 2
    # One vocabulary with the U-net summary: reg names the reference rows; kind says which output of a fit.
    table = summary(run_a)
    assert [(r["scaling"], r["reg"], r["kind"]) for r in table] == [
        (s, reg, kind) for s in "12"
        for reg, kind in (("ground_truth", ""), ("noisy_input", ""), ("0", "best"), ("0", "final"))]
    truth, noisy, best, final = table[:4]
    assert (float(truth["jump_ratio"]), float(truth["rise_width_px"]), truth["psnr"]) == (1.0, 0.8, "inf")
    assert int(truth["n_edges"]) >= 1 and truth["n_images"] == "1" and truth["n_seeds"] == "2"
    assert final["iteration"] == "150" and 1 <= float(best["iteration_low"]) <= float(best["iteration_high"]) <= 150
    assert float(best["psnr_low"]) >= float(final["psnr_low"])
    per_seed = summary(run_a, "metrics_per_seed.csv")
    assert [(r["seed"], r["reg"], r["kind"]) for r in per_seed if r["scaling"] == "1"] == [
        (seed, reg, kind) for seed in "01"
        for reg, kind in (("ground_truth", ""), ("noisy_input", ""), ("0", "best"), ("0", "final"))]
    best_0 = next(r for r in per_seed if (r["scaling"], r["seed"], r["kind"]) == ("1", "0", "best"))
    assert float(best_0["psnr"]) == pytest.approx(max(row["psnr"] for row in curve(run_a, 1)), abs=1e-3)
    assert int(best_0["iteration"]) == 1 + int(np.argmax([row["psnr"] for row in curve(run_a, 1)]))
    arrays = np.load(run_a / "arrays" / "scaling2.npz")
    assert arrays["final_reg0"].shape == (32, 32) and arrays["final_reg0"].std() > 0.05  # the output follows the image
    assert set(np.load(run_a / "arrays" / "input.npz").files) == {"input", "input_seed_1"}
    for name in ("comparison_best.png", "comparison_final.png", "psnr.png"):
        assert (run_a / name).stat().st_size > 10_000


def test_two_seeds_fit_the_same_noisy_image_differently_and_the_summary_pools_them(run_a):
    # Seed 0 keeps the one-seed names; seed 1's files say their seed.
    names = sorted(p.name for p in (run_a / "fits").glob("scaling_1_*.state.pt"))
    assert names == ["scaling_1_reg_0.state.pt", "scaling_1_reg_0_seed_1.state.pt"]
    for s in (1, 2):
        zero, one = state(run_a, 0, s), state(run_a, 1, s)
        assert (zero["config"]["seed"], one["config"]["seed"]) == (0, 1)
        assert zero["config"]["data_seed"] == one["config"]["data_seed"] == 0  # the same noisy image
        difference = (zero["progress"]["average"] - one["progress"]["average"]).abs().mean()
        assert difference > 0.01  # two fits, not one
        assert not torch.equal(zero["model"]["inc.double_conv.0.weight"], one["model"]["inc.double_conv.0.weight"])
    per_seed = summary(run_a, "metrics_per_seed.csv")
    noisy = [r for r in per_seed if r["reg"] == "noisy_input" and r["scaling"] == "2"]
    assert len(noisy) == 2 and noisy[0]["psnr"] == noisy[1]["psnr"]  # both seeds measured against one noisy image
    # The pooled row: the median over the seeds (of two, their mean) and the range from the smaller to the larger.
    for s in "12":
        for kind in ("best", "final"):
            values = [float(r["jump_ratio"]) for r in per_seed if (r["scaling"], r["reg"], r["kind"]) == (s, "0", kind)]
            pooled_row = next(r for r in summary(run_a) if (r["scaling"], r["reg"], r["kind"]) == (s, "0", kind))
            assert values[0] != values[1]
            assert float(pooled_row["jump_ratio"]) == pytest.approx(sum(values) / 2, rel=1e-5)
            assert (float(pooled_row["jump_ratio_low"]), float(pooled_row["jump_ratio_high"])) == pytest.approx(
                (min(values), max(values)), rel=1e-5)


def test_a_seed_draws_the_initialisation_and_every_reg_of_one_seed_and_s_starts_from_it(tmp_path):
    config = config_of(*TINY, "--output-dir", str(tmp_path))
    (tmp_path / "fits").mkdir()
    nets = {fit: start_fit(config, fit, "cpu")[0].state_dict() for fit in (Fit(0, 2, 0.0), Fit(0, 2, 1e-3),
                                                                         Fit(1, 2, 0.0))}
    same, other_seed = (nets[Fit(0, 2, 0.0)], nets[Fit(0, 2, 1e-3)]), nets[Fit(1, 2, 0.0)]
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])
    assert not torch.equal(same[0]["inc.double_conv.0.weight"], other_seed["inc.double_conv.0.weight"])


def test_pooling_identical_seeds_gives_the_one_seed_summary_with_zero_width_intervals(run_a):
    config = config_of(*TINY, "--output-dir", str(run_a))
    results = collect(config)  # seed 0 only
    single = summary_rows(per_seed_rows(config, results))
    for result in results.values():  # seeds 3 and 4 that fitted exactly what seed 0 did
        result["fits"].update({(seed, reg): fit for (_, reg), fit in list(result["fits"].items()) for seed in (3, 4)})
    triple = summary_rows(per_seed_rows(config_of(*TINY, "--seeds", "0", "3", "4"), results))
    assert [r["n_seeds"] for r in single] == [1] * len(single) and [r["n_seeds"] for r in triple] == [3] * len(triple)
    for one, three in zip(single, triple, strict=True):
        for name in ("iteration", "jump_ratio", "rise_width_phys", "psnr", "ssim_interior"):
            assert one[name] == three[name]
            assert three[f"{name}_low"] == three[name] == three[f"{name}_high"]  # no spread: a zero-width interval
        assert three["end"] == one["end"].replace("1", "3")  # e.g. "rising 1" -> "rising 3"


def test_pooling_takes_the_median_and_the_range_over_the_seeds():
    rows = [dict(scaling=1, reg=0.0, kind="best", n_images=1, n_edges=93, end=end, iteration=iteration,
                 **dict.fromkeys(metrics.SET_MEASURES, value))
            for end, iteration, value in (("fell", 300, 21.0), ("rising", 100, 20.0), ("fell", 200, 26.0))]
    row = pooled(rows)
    assert (row["psnr"], row["psnr_low"], row["psnr_high"]) == (21.0, 20.0, 26.0)
    assert (row["iteration"], row["iteration_low"], row["iteration_high"]) == (200.0, 100.0, 300.0)
    assert (row["n_seeds"], row["end"]) == (3, "fell 2, rising 1")


# ----------------------------------------------------------------------------------------------
# How long a fit runs, and the weight decay it gets
# ----------------------------------------------------------------------------------------------


def test_a_reg_0_fit_ends_once_its_psnr_has_fallen_stop_drop_below_its_best():
    # A hand-made PSNR curve: a dip of 0.8 dB that recovers, a new best of 16, then 1.0 dB below it at iteration 10.
    curve = [10, 12, 14, 15, 14.5, 14.2, 16, 15.4, 15.1, 15.0, 14.9, 14.0]

    def end(stop_drop, cap=12, reg=0.0):
        config = config_of(*TINY, "--stop-drop", str(stop_drop), "--iterations", str(cap), "--checkpoint-every", "1")
        fit = Fit(0, 1, reg)
        for done in range(1, len(curve) + 1):
            run = dict(done=done, best_psnr=max(curve[:done]), psnrs=curve[:done])
            if finished(config, fit, run, planned(config, fit) if reg == 0 else cap):
                return done

    assert end(1.0) == 10  # not at 6 (0.8 dB below 15) nor at 9 (0.9 below 16)
    assert end(0.8) == 6 and end(2.0) == 12 and end(0) == 12  # 2 dB: never, so the cap; 0: the rule is off
    assert end(1.0, cap=8) == 8
    assert end(1.0, reg=1e-3) == 12  # a reg > 0 fit runs its planned length whatever its own curve does
    assert end_of(curve[:10], 1.0) == "fell" and end_of(curve[:9], 1.0) == "peaked"
    assert end_of(curve[:7], 1.0) == "rising"  # its best at its last iteration: still rising


def test_the_reg_0_fit_sets_the_length_of_the_others_at_its_seed_and_s(tmp_path):
    flags = [*TINY, "--scalings", "1", "--weight-decays", "1e-3", "0", "--stop-drop", "0.05"]
    main([*flags, "--output-dir", str(tmp_path)])
    config = config_of(*flags, "--output-dir", str(tmp_path))
    psnrs = state(tmp_path, 0, 1)["progress"]["psnrs"]
    running_best = np.maximum.accumulate(psnrs)
    assert len(psnrs) < 150 and running_best[-1] - psnrs[-1] >= 0.05  # ended by the rule, not the cap
    assert np.all(running_best[:-1] - psnrs[:-1] < 0.05)  # and not earlier
    assert len(state(tmp_path, 0, 1, 1e-3)["progress"]["psnrs"]) == len(psnrs)
    assert planned(config, Fit(0, 1, 1e-3)) == len(psnrs)
    row = next(r for r in summary(tmp_path) if r["reg"] == "0" and r["kind"] == "final")
    assert (row["iteration"], row["end"]) == (str(len(psnrs)), "fell 1")


def test_adam_gets_the_weight_decay_reg_over_s_squared(tmp_path):
    main([*TINY, "--scalings", "1", "2", "3", "--weight-decays", "0", "0.001", "--iterations", "2",
          "--checkpoint-every", "1", "--output-dir", str(tmp_path)])
    for s, expected in ((1, 1e-3), (2, 2.5e-4), (3, 1.1111111e-4)):
        for reg, decay in ((0.0, 0.0), (1e-3, expected)):
            groups = state(tmp_path, 0, s, reg)["optimizer"]["param_groups"]
            assert [group["weight_decay"] for group in groups] == pytest.approx([decay] * len(groups), rel=1e-6)


def test_a_fit_killed_midway_resumes_to_the_uninterrupted_result(run_a, tmp_path):
    # Started with a cap of 100 and resumed with 150: a larger cap continues the fits exactly.
    cmd = [sys.executable, "deep_image_prior.py", *TINY, *SEEDS, "--output-dir", str(tmp_path)]
    run = subprocess.Popen([*cmd, "--iterations", "100"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    for line in run.stdout:
        if "iteration 10/100" in line:
            run.send_signal(signal.SIGTERM)
            break
    assert "seed=0 s=1 reg=0: stopped after iteration" in run.stdout.read()
    assert run.wait(timeout=60) == 128 + signal.SIGTERM
    assert 10 <= state(tmp_path, 0, 1)["progress"]["done"] < 150  # really midway
    resumed = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at iteration" in resumed.stdout
    for seed in (0, 1):
        for s in (1, 2):
            a, b = state(run_a, seed, s), state(tmp_path, seed, s)
            assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
            assert torch.equal(a["progress"]["average"], b["progress"]["average"])
            assert a["progress"]["psnrs"] == b["progress"]["psnrs"]
    assert summary(tmp_path) == summary(run_a)
    assert summary(tmp_path, "metrics_per_seed.csv") == summary(run_a, "metrics_per_seed.csv")
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # no half-written files


def test_a_state_of_other_values_is_an_error_and_fresh_starts_over(run_a, tmp_path, capsys):
    import shutil

    shutil.copytree(run_a, tmp_path / "run")
    with pytest.raises(SystemExit) as exit:
        main([*TINY, "--lr", "0.02", "--output-dir", str(tmp_path / "run")])
    assert exit.value.code == 2
    assert "was made with lr = 0.001, this command has 0.02; use --fresh" in capsys.readouterr().err
    # A cap below what a fit has run is refused, before anything is fitted.
    with pytest.raises(SystemExit) as exit:
        main([*TINY, "--iterations", "100", "--output-dir", str(tmp_path / "run")])
    assert exit.value.code == 2
    assert "has run 150 iterations, more than --iterations 100; use --fresh" in capsys.readouterr().err
    main([*TINY, "--lr", "0.02", "--scalings", "1", "--iterations", "5", "--checkpoint-every", "5", "--fresh",
          "--output-dir", str(tmp_path / "run")])
    assert len(curve(tmp_path / "run", 1)) == 5


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


def test_every_field_has_a_flag_and_the_presets_differ_where_they_say():
    assert set(field_help(Config)) == {f.name for f in Config.__dataclass_fields__.values()}
    quick = config_of("--preset", "quick")
    assert (quick.size_orig, quick.width, quick.depth, quick.output_dir) == (64, 16, 3, "data/results/dip/quick")
    assert (quick.seeds, quick.iterations, quick.stop_drop, quick.weight_decays) == ((0, 1, 2, 3), 3000, 0.5, (0, 1e-2))
    assert config_of("--preset", "quick", "--weight-decays", "0", "1e-3").weight_decays == (0.0, 1e-3)
    paper = config_of()
    assert paper.iterations == 3000 and paper.lr == 0.001 and paper.input_noise == pytest.approx(1 / 30)
    assert paper.seeds == (0,) and config_of("--seeds", "4", "2").seeds == (4, 2)


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
    (["--seeds"], "argument --seeds: expected at least one argument"),
    (["--seeds", "0", "3", "0"], "--seeds names a seed twice: 0 3 0"),
    (["--seeds", "2", "-1"], "every seed must be >= 0, got --seeds 2 -1"),
    (["--iterations", "5"], "--iterations 5 is below --checkpoint-every 10"),
    (["--stop-drop", "-1"], "--stop-drop must be >= 0, got -1.0"),
    (["--stop-drop", "1", "--weight-decays", "1e-3"], "with --stop-drop the reg > 0 fits run as long as the reg 0"),
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
