"""Training seeds, the zoom start and the stopping rule of unet_circles.py, on tiny networks."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ENV, stop_at
from test_evaluate import read_metrics
from test_trainer import ROOT, SMALL, assert_same, config_of

import unet_circles as trainer
from evaluate_unet import evaluate
from models.trunks import UNet, zoom
from unet_circles import ModelRun, TrainingState, converged, load_data, main, model_files
from utils.metrics import median_interval, set_summary
from utils.runs import find_models
from utils.weights import load_checkpoint, load_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")
ONE = [*SMALL, "--weight-decays", "0"]  # one reg at each s


def weights(out, scaling, seed=0, init="scratch", epoch=None):
    config = config_of(*ONE, "--out-dir", str(out), "--init", init)
    files = model_files(config, scaling, 0.0, seed)
    return load_checkpoint(files.weights(epoch or json.loads(files.config.read_text())["final_epoch"]))


@pytest.fixture(scope="module")
def s1_run(tmp_path_factory):
    """s = 1 trained for seeds 0 and 1 (3 epochs each), the source of every zoom start here."""
    out = tmp_path_factory.mktemp("s1")
    main([*ONE, "--scalings", "1", "--seeds", "0", "1", "--bn-recalibration", "4", "--out-dir", str(out)])
    return out


def test_seeds_change_the_weights_and_nothing_else(s1_run, tmp_path):
    a, b = weights(s1_run, 1, seed=0), weights(s1_run, 1, seed=1)
    assert not torch.equal(a["inc.double_conv.0.weight"], b["inc.double_conv.0.weight"])
    # Each seed's model is what a run of that seed alone trains: a seed's draws do not depend on the list.
    main([*ONE, "--scalings", "1", "--seeds", "1", "--bn-recalibration", "4", "--out-dir", str(tmp_path)])
    assert_same(weights(tmp_path, 1, seed=1), b)
    # The same data and test noise for every seed: each seed's logged test loss is its weights on the one test set.
    config = config_of(*ONE, "--scalings", "1", "--out-dir", str(s1_run))
    test = trainer.test_set(config, load_data(config, torch.device("cpu"))[1], 1, torch.device("cpu"))
    for seed, state in ((0, a), (1, b)):
        net = UNet(1, 4, 1)
        net.load_state_dict(state)
        logged = json.loads(model_files(config, 1, 0.0, seed).config.read_text())
        with open(model_files(config, 1, 0.0, seed).log) as file:
            last = file.read().strip().splitlines()[-1].split(",")
        assert logged["seed"] == seed and logged["final_epoch"] == 3 and logged["stopping"] == "epochs"
        measured = trainer.test_metrics(config, net, test, 1, torch.device("cpu"))["test_loss"]
        assert measured == pytest.approx(float(last[2]), rel=1e-6)


def test_a_zoom_start_is_the_zoomed_s1_model_exactly(s1_run):
    config = config_of(*ONE, "--scalings", "2", "--init", "zoom", "--seeds", "1", "--out-dir", str(s1_run))
    source = UNet(1, 4, 1)
    load_state_dict(source, model_files(config, 1, 0.0, 1).weights())
    expected = zoom(source, 2, pooling="pixels", centre=False).eval()
    params = load_data(config, torch.device("cpu"))[0]
    run = ModelRun(config, 2, 0.0, 1, params, torch.device("cpu"))
    start, source_record = run.build(None, TrainingState())
    assert start.startswith("zoomed from size_orig_16_scaling_1_weight_decay_0.0_seed_1_n_epochs_3.pt")
    assert len(source_record["init_source_sha256"]) == 64
    state = run.net.state_dict()
    assert list(state) == list(expected.state_dict())
    assert all(torch.equal(state[k], v) for k, v in expected.state_dict().items())
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))  # varies at every pixel
    y = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, reference = run.net.eval()(x), expected(x)
        assert (out - expected(y)).abs().max() > 1e-2  # the output depends on the input
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_zoom_models_train_from_their_seeds_s1_model_and_the_evaluator_finds_them(s1_run):
    main([*ONE, "--scalings", "2", "--init", "zoom", "--seeds", "0", "1", "--epochs", "1", "--bn-recalibration", "4",
          "--out-dir", str(s1_run)])
    for seed in (0, 1):
        config = config_of(*ONE, "--scalings", "2", "--init", "zoom", "--out-dir", str(s1_run))
        record = json.loads(model_files(config, 2, 0.0, seed).config.read_text())
        source = model_files(config, 1, 0.0, seed).weights()
        assert record["init"] == "zoom" and record["init_source"] == source.name
        with open(model_files(config, 2, 0.0, seed).log) as file:
            epochs = [line.split(",")[0] for line in file.read().splitlines()[1:]]
        assert epochs == ["0", "1"]  # epoch 0: the zoomed network before any step
    found, notes = find_models(s1_run, {"weight_decays": {}}, "none")
    assert not notes
    assert sorted((m.scaling, m.init, m.seed, m.epochs) for m in found) == [
        (1, "scratch", 0, 3), (1, "scratch", 1, 3), (2, "zoom", 0, 1), (2, "zoom", 1, 1)]


def test_the_stopping_rule_on_hand_made_loss_curves():
    assert not converged([1.0, 0.5, 0.4], 0.01)  # fewer than 4 epochs: a quarter would be no epoch
    assert converged([1.0, 0.5, 0.4, 0.399], 0.01)  # 0.25% better than the best of the first three
    assert not converged([1.0, 0.5, 0.4, 0.39], 0.01)  # 2.5% better
    assert not converged([1.0, 0.5, 0.4, 0.399], 0.0)  # 0: never stop early
    # 8 epochs: the last quarter is epochs 7 and 8 against the best of epochs 1 to 6 (0.30, at epoch 5).
    assert converged([1.0, 0.6, 0.4, 0.35, 0.30, 0.31, 0.299, 0.32], 0.01)
    assert not converged([1.0, 0.6, 0.4, 0.35, 0.30, 0.31, 0.299, 0.29], 0.01)
    assert converged([0.5, 0.4, 0.45, 0.46], 0.01)  # worse at the end counts as no improvement


def test_a_model_that_stops_improving_ends_early_and_says_so(tmp_path, capsys):
    main([*ONE, "--scalings", "1", "--epochs", "20", "--min-improvement", "0.5", "--out-dir", str(tmp_path)])
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert (record["final_epoch"], record["stopping"], record["epochs"]) == (4, "rule", 20)
    assert "done after epoch 4 (the stopping rule held" in capsys.readouterr().out
    assert (tmp_path / "size_orig_16_scaling_1_weight_decay_0.0_n_epochs_4.pt").is_file()
    next(tmp_path.glob("*.state.pt")).unlink()  # as the study's folder ships: final weights, log and .json
    main([*ONE, "--scalings", "1", "--epochs", "20", "--min-improvement", "0.5", "--out-dir", str(tmp_path)])
    assert "already trained, " + str(tmp_path / "size_orig_16_scaling_1_weight_decay_0.0_n_epochs_4.pt") in \
        capsys.readouterr().out
    with pytest.raises(SystemExit):  # the .json still guards the config
        main([*ONE, "--scalings", "1", "--epochs", "20", "--min-improvement", "0.4", "--out-dir", str(tmp_path)])
    assert "was trained with min_improvement = 0.5, this command has 0.4" in capsys.readouterr().err


def test_a_zoom_start_stopped_mid_epoch_resumes_to_the_uninterrupted_weights(s1_run, tmp_path):
    argv = [*ONE, "--scalings", "2", "--init", "zoom", "--epochs", "2", "--bn-recalibration", "4"]
    for name in ("a", "b"):  # the s = 1 source of seed 0 in both
        (tmp_path / name).mkdir()
        for path in s1_run.glob("size_orig_16_scaling_1_weight_decay_0.0[._]*"):
            (tmp_path / name / path.name).write_bytes(path.read_bytes())
    main([*argv, "--out-dir", str(tmp_path / "a")])
    cmd = [sys.executable, "unet_circles.py", *argv, "--out-dir", str(tmp_path / "b")]
    rest, status = stop_at(cmd, "epoch 1:")
    assert "stopped in epoch 2" in rest and status == 128 + signal.SIGTERM
    resumed = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and "resuming at epoch 2" in resumed.stdout, resumed.stderr
    assert_same(weights(tmp_path / "a", 2, init="zoom"), weights(tmp_path / "b", 2, init="zoom"))
    logs = [(tmp_path / n / "size_orig_16_scaling_2_weight_decay_0.0_init_zoom.csv").read_text() for n in "ab"]
    assert [line.split(",")[:6] for line in logs[0].splitlines()] == [line.split(",")[:6]
                                                                       for line in logs[1].splitlines()]


@pytest.mark.parametrize("argv, message", [
    (["--init", "other"], "argument --init: invalid choice: 'other'"),
    (["--scalings", "2", "--init", "zoom"], "--init zoom needs the s = 1 model of reg 0.0, seed 0 in"),
    (["--seeds", "0", "0"], "--seeds lists a seed twice: 0 0"),
    (["--seeds", "-1"], "seeds must be >= 0, got --seeds -1"),
    (["--seeds"], "argument --seeds: expected at least one argument"),
    (["--init", "zoom", "--warm-start"], "--warm-start and --init zoom both choose the start: give one"),
    (["--min-improvement", "1"], "--min-improvement must be 0 to below 1"),
])
def test_bad_study_flags_are_one_sentence_and_exit_2(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit:
        main([*ONE, *argv, "--out-dir", str(out)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_zoom_source_of_another_network_is_refused(s1_run, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for path in s1_run.glob("size_orig_16_scaling_1_weight_decay_0.0[._]*"):
        (out / path.name).write_bytes(path.read_bytes())
    with pytest.raises(SystemExit) as exit:
        main([*ONE, "--scalings", "2", "--init", "zoom", "--width", "8", "--out-dir", str(out)])
    assert exit.value.code == 2
    assert "has width 4 (this run: 8); a zoom start needs the same network" in capsys.readouterr().err
    assert not list(out.glob("*scaling_2*"))


def test_identical_seeds_give_the_one_seed_interval_and_differing_seeds_widen_it():
    rng = np.random.default_rng(0)
    values, groups = rng.normal(size=300), np.repeat(np.arange(30), 10)  # 30 images of 10 edges
    one = median_interval(values, groups)
    twice = median_interval(np.tile(values, 3), np.tile(groups, 3), runs=np.repeat([0, 1, 2], 300))
    assert twice == one
    shifted = np.concatenate([values, values + 2, values + 4])  # three training runs that disagree
    pooled = median_interval(shifted, np.tile(groups, 3), runs=np.repeat([0, 1, 2], 300))
    images_only = median_interval(shifted, np.tile(groups, 3))  # the runs' disagreement ignored
    assert pooled[2] - pooled[1] > 2 * (images_only[2] - images_only[1])
    assert pooled[1] <= pooled[0] <= pooled[2] and pooled[1] < 1 and pooled[2] > 3  # runs' medians: 0, 2, 4


def test_the_set_summary_of_identical_seeds_is_the_one_seed_summary():
    rng = np.random.default_rng(1)
    truths = np.zeros((4, 16, 16))
    truths[:, 4:12, 5:11] = 0.7
    outputs = truths + rng.normal(scale=0.05, size=truths.shape)
    one, pooled = set_summary(outputs, truths, 1), set_summary(np.stack([outputs] * 3), truths, 1)
    assert {k: pooled[k] for k in one} == one
    assert pooled["jump_ratio_seeds"] == " ".join([f"{one['jump_ratio']:.6g}"] * 3)


def test_the_evaluator_pools_the_seeds_and_lists_every_model(s1_run, tmp_path):
    main([*ONE, "--scalings", "2", "--init", "zoom", "--seeds", "0", "1", "--epochs", "1", "--bn-recalibration", "4",
          "--out-dir", str(s1_run)])
    evaluate(s1_run, "quick", tmp_path / "all", device="cpu", n_test=8)
    summary = {(r["scaling"], r["reg"], r["init"]): r for r in read_metrics(tmp_path / "all" / "metrics_summary.csv")}
    for seed in (0, 1):  # each seed alone, evaluated from a folder of its own
        alone = tmp_path / f"seed{seed}"
        alone.mkdir()
        for path in s1_run.iterdir():
            if ("_seed_1" in path.name) == (seed == 1):
                (alone / path.name).write_bytes(path.read_bytes())
        evaluate(alone, "quick", tmp_path / f"out{seed}", device="cpu", n_test=8)
        for row in read_metrics(tmp_path / f"out{seed}" / "metrics_summary.csv"):
            if row["n_seeds"]:
                pooled = summary[row["scaling"], row["reg"], row["init"]]
                assert row["n_seeds"] == "1" and pooled["n_seeds"] == "2"
                assert pooled["psnr_seeds"].split()[seed] == row["psnr"]
                assert pooled["jump_ratio_seeds"].split()[seed] == row["jump_ratio"]
    for row in summary.values():
        for name in ("jump_ratio", "psnr_interior", "mse_band"):
            assert float(row[f"{name}_low"]) <= float(row[name]) <= float(row[f"{name}_high"])
    models = read_metrics(tmp_path / "all" / "models.csv")
    assert [(r["scaling"], r["init"], r["seed"], r["epochs"], r["stopping"]) for r in models] == [
        ("1", "scratch", "0", "3", "epochs"), ("1", "scratch", "1", "3", "epochs"), ("2", "zoom", "0", "1", "epochs"),
        ("2", "zoom", "1", "1", "epochs")]
    assert (tmp_path / "all" / "convergence.png").stat().st_size > 10_000


def test_the_psnr_gain_over_the_input_is_paired_image_by_image():
    truths = np.zeros((3, 16, 16))
    truths[:, 4:12, 5:11] = 0.7
    truths[1, 4:12, 5:11] = 0.4  # another contrast: another PSNR, the same gain
    inputs, outputs = truths + 0.1, truths + 0.05  # half the error: a quarter of the squared error
    row = set_summary(np.stack([outputs, outputs]), truths, 1, inputs=inputs)
    assert row["psnr_interior_gain"] == pytest.approx(10 * np.log10(4))
    assert row["psnr_interior_gain_low"] == pytest.approx(row["psnr_interior_gain_high"])
    assert row["offset_flat"] == pytest.approx(0.05) and row["mse_band"] == pytest.approx(0.05**2)
    assert "psnr_interior_gain" not in set_summary(outputs, truths, 1)


def test_the_command_for_a_study_folder_without_weights_trains_exactly_its_models(tmp_path):
    """s = 1 from scratch over seeds 0-2, s = 2, 3 from scratch over seeds 0, 1 and zoom starts over 0-2 at fewer
    epochs, as data/weights/study holds them: each command of train_command, parsed as the trainer parses it,
    trains the models of one of these runs and nothing else, the runs from scratch first."""
    out = str(tmp_path / "study")
    scratch = config_of("--preset", "quick", "--output-dir", out)
    zoom = config_of("--preset", "quick", "--output-dir", out, "--init", "zoom", "--epochs", "6", "--lr", "0.001")
    regs = (0.0, 0.001, 0.01)
    runs = [(scratch, [1], (0, 1, 2)), (scratch, [2, 3], (0, 1)), (zoom, [2, 3], (0, 1, 2))]
    wanted = {json.dumps(trainer.config_record(config, s, reg, seed), sort_keys=True)
              for config, scalings, seeds in runs for s in scalings for reg in regs for seed in seeds}
    paths = []
    for k, record in enumerate(sorted(wanted, reverse=True)):  # the zoom starts' configs first
        paths.append(tmp_path / f"{k}.json")
        paths[-1].write_text(record)
    commands = trainer.train_command(paths, out).split("; python ")
    assert len(commands) == 3 and "--init zoom" in commands[-1]

    def trains(command):
        config = config_of(*command.removeprefix("unet_circles.py ").split())
        return {json.dumps(trainer.config_record(config, s, reg, seed), sort_keys=True)
                for s, reg, seed, _ in trainer.models(config)}

    def same_model(record):  # every value that changes the weights, and which model it is
        values = json.loads(record)
        return json.dumps({k: v for k, v in values.items() if k not in trainer.RESUMABLE_CHANGES}, sort_keys=True)

    made = [set(map(same_model, trains(command))) for command in commands]
    assert sum(map(len, made)) == len(wanted) == 1 * 3 * 3 + 2 * 3 * 2 + 2 * 3 * 3
    assert set().union(*made) == set(map(same_model, wanted))
