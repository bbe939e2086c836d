"""evaluate_unet.py as a user runs it: tiny networks in the paper's and the quick preset's file layout."""

import csv
import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate_unet import FIGURE_MODELS, NOISE_SEED, TEST_SAMPLES, _download, evaluate, main
from fake_zenodo import FakeZenodo, closed_port_url, no_proxy  # noqa: F401 (autouse fixture)
from models.trunks import UNet
from unet_circles import config_record, model_files, preset_config
from utils import zenodo
from utils.circles import noisy_pairs, rasterise, sample_circles, save_circles_csv, split
from utils.files import write_text_atomic
from utils.weights import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["sample", "scaling", "reg", "init", "seed", "psnr", "ssim", "rise_width_px", "rise_width_phys", "jump_ratio",
           "n_edges"]




def state_bytes(config, scaling, seed):
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(UNet(scaling, config.width, config.depth).state_dict(), buffer)
    return buffer.getvalue()


def weights_path(config, scaling, reg):
    return model_files(config, scaling, reg).weights()


def write_run(config, models):
    """A run folder as unet_circles.py leaves it: per model the final weights and the config beside them."""
    Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    for k, (s, reg) in enumerate(models):
        weights_path(config, s, reg).write_bytes(state_bytes(config, s, seed=k))
        write_text_atomic(model_files(config, s, reg).config, json.dumps(config_record(config, s, reg)))


def all_models(config):
    return [(s, reg) for s, regs in config.weight_decays.items() for reg in regs]


def run_script(*args, cwd, env=None):
    """The script as a user runs it; returns (exit status, stderr)."""
    result = subprocess.run([sys.executable, str(ROOT / "evaluate_unet.py"), *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)
    return result.returncode, result.stderr


def read_metrics(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_paper_preset_downloads_the_six_figure_files_and_writes_every_output(tmp_path, capsys):
    # The paper's names and sizes (128 px, 40 epochs, the full weight-decay table), a tiny network.
    config = dataclasses.replace(
        preset_config("paper"), width=4, depth=1, out_dir=str(tmp_path / "weights"), device="cpu"
    )
    record = {
        weights_path(config, s, reg).name: state_bytes(config, s, seed=k)
        for k, (s, reg) in enumerate(all_models(config))
    }
    out = tmp_path / "results"
    with FakeZenodo(record) as server:
        rows = evaluate(config.out_dir, "paper", out, zenodo_url=server.url, device="cpu")
    names = [weights_path(config, s, reg).name for s, reg in FIGURE_MODELS]
    assert sorted(name for name in record if server.fetched(name)) == sorted(names)  # only the six
    assert all(len(server.fetched(name)) == 1 for name in names)
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == sorted(names + [zenodo.MANIFEST])
    assert capsys.readouterr().out.count(f"(Zenodo record {zenodo.RECORD}, MD5 verified)") == 6

    for name in ("comparison_resolutions.png", "comparison_weight_decays.png", "regularity.png", "metrics.csv"):
        assert (out / name).stat().st_size > 1000
    # Arrays: one file per (sample, s), float32 at the resolution of s, a recon per evaluated reg.
    recon_keys = {
        1: ["recon_reg0", "recon_reg0.001", "recon_reg0.01", "recon_reg0.1"],
        2: ["recon_reg0.001"],
        3: ["recon_reg0.001"],
    }
    test = torch.as_tensor(split(sample_circles(config.n_samples, seed=config.data_seed))[1][list(TEST_SAMPLES)])
    for s, keys in recon_keys.items():
        arrays = [np.load(out / "arrays" / f"sample{i}_scaling{s}.npz") for i in range(5)]
        for a in arrays:
            assert sorted(a.files) == sorted(["noisy", "ground_truth"] + keys)
            assert all(a[k].shape == (128 * s, 128 * s) and a[k].dtype == np.float32 for k in a.files)
        noisy, clean = noisy_pairs(test, 128 * s, torch.Generator().manual_seed(NOISE_SEED + s))
        assert np.array_equal(np.stack([a["noisy"] for a in arrays]), noisy[:, 0].numpy())
        assert np.array_equal(np.stack([a["ground_truth"] for a in arrays]), clean[:, 0].numpy())
        # Every model saw that same noisy input: rerun each on it.
        for reg in config.weight_decays[s]:
            if f"recon_reg{reg:g}" in keys:
                model = UNet(s, 4, 1).eval()
                model.load_state_dict(torch.load(weights_path(config, s, reg), weights_only=True))
                with torch.inference_mode():
                    expected = model(noisy)[:, 0].numpy()
                assert np.allclose(np.stack([a[f"recon_reg{reg:g}"] for a in arrays]), expected, atol=1e-5)
    # The ground truth of sample 0 is test sample 597 of the seeded data set.
    assert np.array_equal(
        np.load(out / "arrays" / "sample0_scaling1.npz")["ground_truth"], rasterise(test[:1], 128)[0, 0].numpy()
    )
    single = {p.name for p in (out / "single").iterdir()}
    assert len(single) == 5 * (6 + 3 + 3) * 2
    assert {
        "sample4_scaling3_recon_reg0.001.png",
        "sample4_scaling3_recon_reg0.001_cut.png",
        "sample0_scaling1_noisy_cut.png",
    } <= single

    # metrics.csv: the columns asked for; a row per (sample, s, reg) and the ground truth as reference.
    table = read_metrics(out / "metrics.csv")
    assert list(table[0]) == COLUMNS and len(table) == 5 * (5 + 2 + 2)
    for row in table:
        if row["reg"] == "ground_truth":
            assert float(row["jump_ratio"]) == 1 and float(row["rise_width_px"]) == pytest.approx(0.8)
            assert float(row["rise_width_phys"]) == pytest.approx(0.8 / (128 * int(row["scaling"])), rel=1e-5)
            assert int(row["n_edges"]) > 0
    assert {row["reg"] for row in table if row["scaling"] == "1"} == {"ground_truth", "0", "0.001", "0.01", "0.1"}
    # metrics_summary.csv: per s the two references, then every model; the paper's default on a CPU: 3 test images.
    summary = read_metrics(out / "metrics_summary.csv")
    assert [(r["scaling"], r["reg"]) for r in summary] == [(str(s), reg) for s, reg in [
        (1, "ground_truth"), (1, "noisy_input"), (1, "0"), (1, "0.001"), (1, "0.01"), (1, "0.1"),
        (2, "ground_truth"), (2, "noisy_input"), (2, "0.001"), (3, "ground_truth"), (3, "noisy_input"), (3, "0.001")]]
    assert {r["n_images"] for r in summary} == {"3"} and len(rows) == len(summary)


def test_quick_preset_from_the_command_line_with_the_authors_csv(tmp_path):
    config = dataclasses.replace(preset_config("quick"), out_dir=str(tmp_path / "weights"))
    write_run(config, all_models(config))
    params = sample_circles(10_000, seed=123)  # stands in for the authors' file
    save_circles_csv(tmp_path / "circles.csv", params)
    out = tmp_path / "results"
    status = main(["--preset", "quick", "--weights-dir", config.out_dir, "--output-dir", str(out),
                   "--circles-csv", str(tmp_path / "circles.csv"), "--device", "cpu"])
    assert status == 0
    test = torch.as_tensor(split(params)[1][list(TEST_SAMPLES)])
    for s, regs in config.weight_decays.items():
        arrays = np.load(out / "arrays" / f"sample2_scaling{s}.npz")
        assert np.array_equal(arrays["ground_truth"], rasterise(test[2:3], 32 * s)[0, 0].numpy())
        assert sorted(arrays.files) == sorted(["noisy", "ground_truth"] + [f"recon_reg{reg:g}" for reg in regs])
    assert len(read_metrics(out / "metrics.csv")) == 5 * (
        3 + len(all_models(config))
    )  # ground truth per s, then models


def tiny_config(tmp_path):
    return dataclasses.replace(preset_config("quick"), size_orig=16, width=4, epochs=1, out_dir=str(tmp_path / "w"),
                               device="cpu", weight_decays={1: (0.0, 1e-3, 1e-2, 1e-1), 2: (1e-3,), 3: (1e-3,)})


def test_amp_stays_close_to_float32(tmp_path):
    config = tiny_config(tmp_path)
    write_run(config, all_models(config))
    evaluate(config.out_dir, "quick", tmp_path / "out", device="cpu", amp=True)
    for s in (1, 3):
        arrays = [np.load(tmp_path / "out" / "arrays" / f"sample{i}_scaling{s}.npz") for i in range(5)]
        model = UNet(s, config.width, config.depth).eval()
        model.load_state_dict(torch.load(weights_path(config, s, 1e-3), weights_only=True))
        with torch.inference_mode():
            exact = model(torch.as_tensor(np.stack([a["noisy"] for a in arrays]))[:, None])[:, 0].numpy()
        amp = np.stack([a["recon_reg0.001"] for a in arrays])
        # bfloat16 keeps 8 bits of mantissa: within a few percent of the output's scale, but not exact.
        assert 0 < np.abs(amp - exact).max() <= 0.03 * np.abs(exact).max()


@pytest.mark.parametrize("damage, message", [
    ("truncated", "is truncated or corrupt"),
    ("other depth", "missing keys"),
    ("other width", "tensors of the wrong shape"),
])
def test_a_bad_checkpoint_is_named_with_what_is_wrong(tmp_path, damage, message):
    config = tiny_config(tmp_path)
    write_run(config, all_models(config))
    path = weights_path(config, 1, 0.0)  # the first model evaluated
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    else:
        other = dataclasses.replace(config, **({"depth": 2} if damage == "other depth" else {"width": 8}))
        path.write_bytes(state_bytes(other, 1, seed=0))
    with pytest.raises(CheckpointError, match=message) as err:
        evaluate(config.out_dir, "quick", tmp_path / "out", device="cpu")
    assert str(path) in str(err.value)


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    config = dataclasses.replace(preset_config("quick"), out_dir=str(tmp_path / "weights"))
    write_run(config, all_models(config))
    marker, path = tmp_path / "marker", weights_path(config, 1, 0.0)
    torch.save({"inc.double_conv.0.weight": torch.zeros(16, 1, 3, 3), "extra": Payload(marker)}, path)
    status, stderr = run_script(
        "--preset", "quick", "--weights-dir", config.out_dir, "--output-dir", tmp_path / "out", cwd=tmp_path
    )
    assert status == 2 and not marker.exists()
    assert (
        stderr.startswith("evaluate_unet.py: error: checkpoint ") and str(path) in stderr and "refused unread" in stderr
    )
    assert len(stderr.strip().splitlines()) == 1
    torch.load(path, weights_only=False)  # the file is a real attack: loaded unsafely, it runs
    assert marker.exists()


def test_no_network_says_what_to_do_and_exits_1(tmp_path):
    (tmp_path / "w").mkdir()
    status, stderr = run_script("--weights-dir", tmp_path / "w", "--output-dir", tmp_path / "out", cwd=tmp_path,
                                env={"ZENODO_URL": closed_port_url()})
    assert status == 1 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert "cannot reach Zenodo at http://127.0.0.1:" in stderr
    assert f"into {tmp_path / 'w'} by hand" in stderr and "--preset quick" in stderr
    assert "size_orig_128_scaling_3_weight_decay_0.00011111111111111112_n_epochs_40.pt" in stderr
    assert (tmp_path / "w").is_dir()  # the user's folder stays


def test_no_network_leaves_no_weights_folder_it_made(tmp_path):
    folder = tmp_path / "data" / "weights" / "paper"  # as the paper preset's default, not there yet
    with pytest.raises(zenodo.ZenodoUnreachable, match="by hand"):
        _download(folder, ["a.pt"], closed_port_url())
    assert not folder.exists() and (tmp_path / "data" / "weights").is_dir()


def test_bad_md5_twice_exits_1_with_one_sentence(tmp_path):
    config = dataclasses.replace(preset_config("paper"), width=4, depth=1)
    record = {weights_path(config, s, reg).name: state_bytes(config, s, seed=0) for s, reg in FIGURE_MODELS}
    name = weights_path(config, 1, 0.0).name  # the first the figures need
    (tmp_path / "w").mkdir()
    with FakeZenodo(record, corrupt={name: 2}) as server:
        status, stderr = run_script("--weights-dir", tmp_path / "w", "--output-dir", tmp_path / "out",
                                    "--zenodo-url", server.url, cwd=tmp_path)
    assert status == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"evaluate_unet.py: {name} from {server.url}")
    assert "failed its MD5 check twice" in stderr and list((tmp_path / "w").iterdir()) == []


def bad_inputs(tmp_path):
    """(arguments, what the one-line message must say) for each mistake a user can make."""
    quick = ["--preset", "quick", "--weights-dir", tmp_path / "empty"]
    shipped = ["--preset", "quick"]  # the shipped quick weights: the run fails before it evaluates anything
    return {
        "unknown preset": (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        "no test images": ([*shipped, "--n-test", "0"], "--n-test must be 1 to 2000 (the test split of the seeded"),
        "too many test images": ([*shipped, "--n-test", "2001"], "--n-test must be 1 to 2000"),
        "zoom 0": ([*shipped, "--zoom", "0", "2"], "--zoom takes whole factors k >= 1, got 0 2"),
        "zoom not a number": ([*shipped, "--zoom", "1.5"], "argument --zoom: invalid int value: '1.5'"),
        "no zoom test images": ([*shipped, "--zoom", "--zoom-n-test", "0"], "--zoom-n-test must be at least 1, got 0"),
        "zoom beyond the summary": ([*shipped, "--n-test", "10", "--zoom", "--zoom-n-test", "32"],
                                    "--zoom-n-test 32 is more than the 10 test images of the summary; give at most 10"),
        "zoom without s = 1": (["--weights-dir", tmp_path / "s2_only", "--zoom"],
                               f"--zoom needs a model trained at s = 1, and {tmp_path / 's2_only'} has none"),
        "missing csv": (
            [*quick, "--circles-csv", tmp_path / "nope.csv"],
            f"cannot read circles file {tmp_path / 'nope.csv'}",
        ),
        "malformed csv": ([*quick, "--circles-csv", tmp_path / "short.csv"], "row 1: 3 columns, expected 20"),
        "no weights folder": (
            ["--weights-dir", tmp_path / "nope"],
            f"the weights folder {tmp_path / 'nope'} does not exist",
        ),
        "unwritable output": (
            [*quick, "--output-dir", tmp_path / "a_file" / "out"],
            f"output folder {tmp_path / 'a_file' / 'out'} cannot be made because {tmp_path / 'a_file'} is a file; "
            "choose another --output-dir",
        ),
        "quick not trained": (
            quick,
            f"no weights in {tmp_path / 'empty'}: neither a config unet_circles.py wrote nor a file like "
            f"{tmp_path / 'empty'}/{model_files(preset_config('quick'), 1, 0.0).weights().name}; "
            f"make them with `python unet_circles.py --preset quick --output-dir {tmp_path / 'empty'}`",
        ),
        "paper offline": (
            ["--no-download", "--weights-dir", tmp_path / "empty"],
            "drop --no-download to fetch the paper's from Zenodo record 7784039",
        ),
        "absent device": ([*quick, "--device", "mps" if torch.cuda.is_available() else "cuda"], "was asked for but"),
    }


@pytest.mark.parametrize("case", list(bad_inputs(Path("/unused"))))
def test_bad_input_is_one_sentence_and_exit_status_2(tmp_path, case):
    args, message = bad_inputs(tmp_path)[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "short.csv").write_text("0.5,0.5,0.2\n")
    (tmp_path / "a_file").write_text("")
    write_run(dataclasses.replace(tiny_config(tmp_path), out_dir=str(tmp_path / "s2_only")), [(2, 0.0)])
    status, stderr = run_script("--output-dir", tmp_path / "out", *args, cwd=tmp_path)  # a later --output-dir wins
    assert status == 2
    assert stderr.startswith("evaluate_unet.py: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1




# ----------------------------------------------------------------------------------------------
# A run folder is the contract: whatever flags made a run, --weights-dir alone evaluates it.
# ----------------------------------------------------------------------------------------------


def run_evaluator(*args, cwd):
    """evaluate_unet.py as a user runs it; returns the whole CompletedProcess."""
    return subprocess.run([sys.executable, str(ROOT / "evaluate_unet.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_a_run_with_other_flags_is_evaluated_from_its_folder_alone(tmp_path):
    from unet_circles import main as train

    run = tmp_path / "run"
    flags = [
        "--size-orig",
        "16",
        "--width",
        "6",
        "--depth",
        "1",
        "--sigma-noise",
        "0.1",
        "--scalings",
        "1",
        "2",
        "--weight-decays",
        "0",
        "1e-3",
        "1e-2",
        "1e-1",
        "--samples",
        "16",
        "--test-samples",
        "4",
        "--batch-size",
        "8",
        "--epochs",
        "3",
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
        "--output-dir",
        str(run),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(flags)
    finally:
        torch.set_num_threads(threads)
    result = run_evaluator("--weights-dir", run, "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    # Both figures from the models the run has: the resolution figure at s = 1, 2 (no s = 3 in this run).
    assert "skipped" not in result.stdout
    assert (out / "comparison_weight_decays.png").stat().st_size > 1000
    assert (out / "comparison_resolutions.png").stat().st_size > 1000
    assert (
        "_n_epochs_3.pt" in result.stdout and "_n_epochs_2.pt" not in result.stdout
    )  # the final weights, not a checkpoint
    for s in (1, 2):
        arrays = [np.load(out / "arrays" / f"sample{i}_scaling{s}.npz") for i in range(5)]
        assert all(a[k].shape == (16 * s, 16 * s) for a in arrays for k in a.files)  # the run's size, not the preset's
        noise = np.stack([a["noisy"] - a["ground_truth"] for a in arrays])
        assert 0.09 < noise.std() < 0.11  # the run's sigma_noise 0.1, not the preset's 0.07
        # Each output is the width-6 network of its own file run on that input.
        model = UNet(s, 6, 1).eval()
        model.load_state_dict(torch.load(run / f"size_orig_16_scaling_{s}_weight_decay_{0.1 / s**2}_n_epochs_3.pt"))
        with torch.inference_mode():
            expected = model(torch.as_tensor(np.stack([a["noisy"] for a in arrays]))[:, None])[:, 0].numpy()
        assert np.allclose(np.stack([a["recon_reg0.1"] for a in arrays]), expected, atol=1e-5)
    assert len(read_metrics(out / "metrics.csv")) == 5 * (2 + 8)  # ground truth per s, then the 8 models


def test_a_folder_mixing_two_sizes_is_refused_naming_both_files(tmp_path):
    small = dataclasses.replace(tiny_config(tmp_path), size_orig=16)
    large = dataclasses.replace(small, size_orig=32)
    write_run(small, [(1, 0.0)])
    write_run(large, [(1, 1e-3)])
    result = run_evaluator("--weights-dir", small.out_dir, "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("evaluate_unet.py: error: size_orig_16_scaling_1_weight_decay_0.0_n_epochs_1.pt")
    assert "has size_orig = 16 but size_orig_32_scaling_1_weight_decay_0.001_n_epochs_1.pt" in result.stderr
    assert not (tmp_path / "out").exists()  # a failed evaluation leaves no output folder behind


def test_an_unfinished_model_is_left_out_with_a_note(tmp_path):
    config = tiny_config(tmp_path)
    write_run(config, [(1, 0.0), (1, 1e-3)])
    weights_path(config, 1, 1e-3).unlink()  # its training has not reached the last epoch
    result = run_evaluator("--weights-dir", config.out_dir, "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "s = 1, reg = 0.001: no final weights size_orig_16_scaling_1_weight_decay_0.001_n_epochs_1.pt" in result.stdout
    )
    assert {row["reg"] for row in read_metrics(tmp_path / "out" / "metrics.csv")} == {"ground_truth", "0"}


@pytest.mark.parametrize("content, what", [
    (b"hello\n", "6 bytes that torch cannot read as a checkpoint"),
    (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "5,000 bytes that torch cannot read"),
    (b"", "an empty file"),
], ids=["text", "random bytes", "empty"])
def test_a_corrupt_checkpoint_is_called_corrupt_with_what_to_do(tmp_path, content, what):
    config = tiny_config(tmp_path)
    write_run(config, [(1, 0.0)])
    path = weights_path(config, 1, 0.0)
    path.write_bytes(content)
    result = run_evaluator("--weights-dir", config.out_dir, "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr == (f"evaluate_unet.py: error: checkpoint {path} is truncated or corrupt ({what}"
                             + result.stderr.split(what, 1)[1])
    assert "); delete it, then download it again or retrain\n" in result.stderr
    assert "weights_only" not in result.stderr and "False" not in result.stderr  # never advice to load it unsafely
    assert not (tmp_path / "out").exists()


def test_the_default_output_folders_are_ignored_by_git_and_the_shipped_figures_are_not():
    """Running the README's commands must leave `git status` clean: runs write where git ignores."""
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")

    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored("data/results/quick/metrics.csv") and ignored("data/results/unet/comparison_resolutions.png")
    assert not ignored("docs/results/quick/metrics.csv") and not ignored("docs/results/quick/regularity.png")
    assert ignored("docs/results/quick/single/sample0_scaling1_noisy.png")


def test_the_summary_measures_the_test_set_and_its_noisy_input_row_is_the_noisy_images_own(tmp_path):
    from utils.circles import test_pairs
    from utils.metrics import set_summary

    config = tiny_config(tmp_path)
    write_run(config, [(1, 0.0), (2, 0.0)])
    rows = evaluate(config.out_dir, "quick", tmp_path / "out", device="cpu", n_test=12)
    assert [(r["scaling"], r["reg"]) for r in rows] == [(1, "ground_truth"), (1, "noisy_input"), (1, 0.0),
                                                        (2, "ground_truth"), (2, "noisy_input"), (2, 0.0)]
    test = torch.as_tensor(split(sample_circles(config.n_samples, seed=config.data_seed))[1][:12])
    for s in (1, 2):
        noisy, clean = test_pairs(test, 16 * s, config.sigma_noise, config.data_seed)  # the trainer's test set
        expected = set_summary(noisy[:, 0].numpy(), clean[:, 0].numpy(), s)
        row = next(r for r in rows if r["scaling"] == s and r["reg"] == "noisy_input")
        assert {k: row[k] for k in expected} == expected
        assert row["n_images"] == 12 and row["jump_ratio_low"] <= row["jump_ratio"] <= row["jump_ratio_high"]
        truth = next(r for r in rows if r["scaling"] == s and r["reg"] == "ground_truth")
        measured = (truth["jump_ratio"], truth["rise_width_px"], truth["psnr_interior"])
        assert measured == (1.0, pytest.approx(0.8), math.inf)
    written = read_metrics(tmp_path / "out" / "metrics_summary.csv")
    assert float(written[1]["psnr_interior"]) == pytest.approx(rows[1]["psnr_interior"], rel=1e-5)


def test_zoom_writes_the_zoomed_and_the_trained_models_side_by_side(tmp_path):
    config = tiny_config(tmp_path)
    write_run(config, [(1, 0.0), (2, 0.0)])
    out = tmp_path / "out"
    rows = evaluate(config.out_dir, "quick", out, device="cpu", n_test=6, zoom_ks=(1, 2, 3))
    table = read_metrics(out / "zoom" / "zoom.csv")
    assert [(r["k"], r["reg"], r["source"]) for r in table] == [
        ("1", "ground_truth", "ground_truth"), ("1", "noisy_input", "noisy_input"), ("1", "0", "zoomed"),
        ("2", "ground_truth", "ground_truth"), ("2", "noisy_input", "noisy_input"), ("2", "0", "zoomed"),
        ("2", "0", "trained"), ("3", "ground_truth", "ground_truth"), ("3", "noisy_input", "noisy_input"),
        ("3", "0", "zoomed")]
    # Zoomed by 1 the network is itself, and the trained s = 2 model saw the same test images: their rows
    # equal the summary's.
    summary = read_metrics(out / "metrics_summary.csv")
    for (k, source), (s, reg) in {("1", "zoomed"): ("1", "0"), ("2", "trained"): ("2", "0")}.items():
        zoomed = next(r for r in table if r["k"] == k and r["source"] == source)
        same = next(r for r in summary if r["scaling"] == s and r["reg"] == reg)
        measured = [c for c in zoomed if c not in ("k", "reg", "source")]  # counts, medians and intervals
        assert [zoomed[c] for c in measured] == [same[c] for c in measured]
    arrays = np.load(out / "zoom" / "arrays" / "sample4_k3.npz")
    assert sorted(arrays.files) == ["ground_truth", "noisy", "recon_reg0"]
    assert all(arrays[name].shape == (48, 48) for name in arrays.files)
    assert (out / "zoom" / "zoom.png").stat().st_size > 1000 and len(rows) == 6


def test_one_test_image_writes_every_output_and_each_interval_is_that_image_s_median(tmp_path):
    from unet_circles import LOG_COLUMNS, TrainingState
    from utils.metrics import SET_MEASURES

    config = tiny_config(tmp_path)
    write_run(config, all_models(config))
    # A two-epoch log beside one model, as the trainer writes it, for training.png.
    history = [{**dict.fromkeys(LOG_COLUMNS, 0.5), "epoch": epoch, "test_loss": 0.02 / epoch} for epoch in (1, 2)]
    TrainingState(history=history).write_log(model_files(config, 1, 0.0).log)
    result = run_evaluator("--weights-dir", config.out_dir, "--output-dir", tmp_path / "out", "--n-test", 1,
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    figures = ["comparison_resolutions.png", "comparison_weight_decays.png", "regularity.png", "training.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*figures, "metrics.csv", "metrics_summary.csv", "models.csv", "arrays", "single"])
    assert all((out / name).stat().st_size > 1000 for name in figures)
    assert len(list((out / "arrays").iterdir())) == 5 * 3 and len(read_metrics(out / "metrics.csv")) == 5 * (3 + 6)
    summary = read_metrics(out / "metrics_summary.csv")
    assert len(summary) == 3 * 2 + 6 and {row["n_images"] for row in summary} == {"1"}
    # Every resample of one image is that image: each interval is the point at its median.
    for row in summary:
        for name in SET_MEASURES:
            assert row[f"{name}_low"] == row[name] == row[f"{name}_high"], (row["scaling"], row["reg"], name)


# ----------------------------------------------------------------------------------------------
# What a user sees: each run's own outputs, checks before the first model, advice that fits the folder.
# ----------------------------------------------------------------------------------------------


def test_each_evaluation_leaves_only_its_own_outputs_in_the_folder(tmp_path):
    first = tiny_config(tmp_path)
    write_run(first, all_models(first))
    out = tmp_path / "out"
    evaluate(first.out_dir, "quick", out, device="cpu", n_test=4, zoom_ks=(1, 2))
    (out / "notes.txt").write_text("the user's own")  # not an output of the evaluator: it stays
    second = dataclasses.replace(first, out_dir=str(tmp_path / "w2"))
    write_run(second, [(1, 0.0), (1, 1e-2)])
    evaluate(second.out_dir, "quick", out, device="cpu", n_test=4)
    assert sorted(p.name for p in out.iterdir()) == ["arrays", "comparison_weight_decays.png", "metrics.csv",
                                                     "metrics_summary.csv", "models.csv", "notes.txt", "regularity.png",
                                                     "single"]
    assert sorted(p.name for p in (out / "arrays").iterdir()) == [f"sample{i}_scaling1.npz" for i in range(5)]
    assert len(list((out / "single").iterdir())) == 5 * 4 * 2  # noisy, truth and the two models, each with its cut
    assert {row["reg"] for row in read_metrics(out / "metrics.csv")} == {"ground_truth", "0", "0.01"}


def test_another_weights_folder_gets_a_results_folder_of_its_own_name(tmp_path):
    from evaluate_unet import _default_output_dir

    assert _default_output_dir("paper", None) == ROOT / "data/results/unet"
    assert _default_output_dir("quick", None) == ROOT / "data/results/quick"
    assert _default_output_dir("quick", ROOT / "data/weights/quick") == ROOT / "data/results/quick"
    assert _default_output_dir("quick", tmp_path / "run7") == ROOT / "data/results/run7"
    assert _default_output_dir("paper", ROOT / "data/weights/quick-long") == ROOT / "data/results/quick-long"


def test_every_checkpoint_is_checked_before_the_first_model_runs(tmp_path):
    config = tiny_config(tmp_path)
    write_run(config, all_models(config))
    last = weights_path(config, 3, 1e-3)  # the last model evaluated
    last.write_bytes(last.read_bytes()[:3000])
    result = run_evaluator("--weights-dir", config.out_dir, "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and f"checkpoint {last} is truncated or corrupt" in result.stderr
    assert "images in" not in result.stdout and not (tmp_path / "out").exists()  # no model ran, nothing written


def test_ctrl_c_is_one_line_and_exit_status_130(tmp_path):
    config = tiny_config(tmp_path)
    write_run(config, all_models(config))
    command = [sys.executable, str(ROOT / "evaluate_unet.py"), "--weights-dir", config.out_dir, "--output-dir",
               str(tmp_path / "out"), "--n-test", "2000", "--device", "cpu"]
    # SIGINT as a terminal leaves it, also where the suite was started in the background (`cmd &` ignores it)
    run = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in run.stdout:
        if "images in" in line:  # the first model is done, six more to go
            run.send_signal(signal.SIGINT)
            break
    assert run.wait(timeout=120) == 130
    assert run.stderr.read() == ("evaluate_unet.py: interrupted; rerun the command to evaluate (files it had begun "
                                 "to write may be incomplete)\n")


def test_a_folder_of_configs_without_weights_names_the_command_that_trains_them(tmp_path):
    config = dataclasses.replace(preset_config("quick"), epochs=40, weight_decays={1: (0.0, 1e-3), 3: (0.0, 1e-3)},
                                 out_dir=str(tmp_path / "long"))
    write_run(config, all_models(config))
    for s, reg in all_models(config):
        weights_path(config, s, reg).unlink()  # as data/weights/quick-long ships: logs and configs only
    result = run_evaluator("--weights-dir", config.out_dir, cwd=tmp_path)  # the paper preset, downloads allowed
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"evaluate_unet.py: error: none of the 4 models configured in {config.out_dir} has its final weights "
        "(training not finished, or the .pt files deleted or not shipped); train them with `python unet_circles.py "
        f"--preset quick --epochs 40 --scalings 1 3 --weight-decays 0.0 0.001 --output-dir {config.out_dir}`\n")


def test_the_comparison_figures_are_drawn_from_the_models_the_folder_has():
    from evaluate_unet import _figure_models

    paper = _figure_models(FIGURE_MODELS)
    assert paper == {
        "comparison_weight_decays": ("U-net outputs for different weight decays (s = 1)", FIGURE_MODELS[:4]),
        "comparison_resolutions": ("U-net outputs at different resolutions (reg = 0.001)",
                                   [(1, 1e-3), (2, 1e-3), (3, 1e-3)])}
    own = _figure_models([(s, reg) for s in (1, 2, 3) for reg in (0.0, 1e-2)])  # --weight-decays 0 1e-2
    assert own["comparison_weight_decays"][1] == [(1, 0.0), (1, 1e-2)]
    assert own["comparison_resolutions"] == ("U-net outputs at different resolutions (reg = 0)",
                                             [(1, 0.0), (2, 0.0), (3, 0.0)])
    lone = _figure_models([(1, 0.0), (2, 1e-2)])
    assert lone == {"comparison_weight_decays": (None, "it needs two models at s = 1 or more"),
                    "comparison_resolutions": (None, "it needs one reg trained at every s, at two s or more")}


def test_zoom_alone_takes_its_factors_from_the_networks_size_and_names_the_trained_models(tmp_path, monkeypatch):
    from evaluate_unet import ZOOM_AUTO, ZOOM_KS
    from utils import plotting

    drawn = {}
    monkeypatch.setattr(plotting, "zoom_figure", lambda path, rows, cuts, cut_rows, title, caption: drawn.update(
        title=title, caption=caption))
    config = tiny_config(tmp_path)
    write_run(config, [(1, 0.0), (2, 0.0)])
    evaluate(config.out_dir, "paper", tmp_path / "out", device="cpu", n_test=5, zoom_ks=ZOOM_AUTO)  # not --preset quick
    table = read_metrics(tmp_path / "out" / "zoom" / "zoom.csv")
    assert sorted({int(r["k"]) for r in table}) == list(ZOOM_KS["quick"])  # a small network: the quick factors
    assert "(5 test images;" in drawn["title"] and "the first 256" not in drawn["caption"]
    assert "trained at s = k (squares):\n  s = 2, reg = 0: size_orig_16_scaling_2_weight_decay_0.0" in drawn["caption"]


def test_help_shows_the_named_presets_folders(capsys):
    for preset, weights, results in (("quick", "data/weights/quick", "data/results/quick"),
                                     ("paper", "data/weights/paper", "data/results/unet")):
        with pytest.raises(SystemExit):
            main(["--preset", preset, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"[{preset}: {weights}," in text and f"[{preset}: {results};" in text
        assert f"[values shown: preset {preset};" in text


def test_the_bfloat16_note_is_for_the_papers_networks_only(tmp_path, monkeypatch, capsys):
    import utils.device

    monkeypatch.setattr(utils.device, "native_bf16", lambda device: True)  # as on an AVX512-BF16 CPU
    config = tiny_config(tmp_path)
    write_run(config, [(1, 0.0)])
    assert main(["--weights-dir", config.out_dir, "--output-dir", str(tmp_path / "o"), "--n-test", "-5"]) == 2
    assert main(["--weights-dir", config.out_dir, "--output-dir", str(tmp_path / "o"), "--n-test", "2"]) == 0
    assert "native bfloat16" not in capsys.readouterr().out  # the note amp_advice gives on such a CPU


def test_an_http_error_from_zenodo_says_what_to_check(tmp_path):
    (tmp_path / "w").mkdir()
    with FakeZenodo({}) as server:
        status, stderr = run_script("--weights-dir", tmp_path / "w", "--output-dir", tmp_path / "out",
                                    "--zenodo-url", f"{server.url}/wrong", cwd=tmp_path)
    assert status == 1 and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith(f"evaluate_unet.py: Zenodo answered {server.url}/wrong/api/records/7784039 with HTTP 404")
    assert "; check --zenodo-url (or $ZENODO_URL; default https://zenodo.org), or put " in stderr


def test_the_final_weights_are_evaluated_never_an_earlier_checkpoint(tmp_path):
    """A run folder keeps a checkpoint every few epochs: the evaluator takes the final epoch's weights even where a
    checkpoint is newer, and leaves out a model that stopped before its final epoch."""
    config = dataclasses.replace(tiny_config(tmp_path), epochs=3)
    write_run(config, [(1, 0.0), (1, 1e-3)])
    model_files(config, 1, 0.0).weights().unlink()  # stopped after its epoch-2 checkpoint
    for k, reg in enumerate((0.0, 1e-3)):
        checkpoint = model_files(config, 1, reg).weights(2)
        checkpoint.write_bytes(state_bytes(config, 1, seed=10 + k))
        later = model_files(config, 1, reg).config.stat().st_mtime + 60
        os.utime(checkpoint, (later, later))  # the newest file of its model
    result = run_evaluator("--weights-dir", config.out_dir, "--output-dir", tmp_path / "out", "--n-test", 4,
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s = 1, reg = 0: no final weights size_orig_16_scaling_1_weight_decay_0.0_n_epochs_3.pt" in result.stdout
    assert {row["reg"] for row in read_metrics(tmp_path / "out" / "metrics.csv")} == {"ground_truth", "0.001"}
    arrays = np.load(tmp_path / "out" / "arrays" / "sample0_scaling1.npz")
    final = UNet(1, config.width, config.depth).eval()
    final.load_state_dict(torch.load(model_files(config, 1, 1e-3).weights(), weights_only=True))
    with torch.inference_mode():
        expected = final(torch.as_tensor(arrays["noisy"])[None, None])[0, 0].numpy()
    assert np.allclose(arrays["recon_reg0.001"], expected, atol=1e-5)
