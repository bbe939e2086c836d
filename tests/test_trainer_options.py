"""The trainer's options, each seen to change what it should: Adam's weight decay at every s, the
learning-rate schedule, the speed options (read off every convolution and optimizer step of a run),
and the refusal of an output folder that cannot be written, also when the tests run as root."""

import os
import stat
from contextlib import contextmanager

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from unet_circles import build_parser, config_from_args, learning_rate, main
from utils.runs import ModelFiles
from utils.weights import load_checkpoint

# Two steps an epoch of 4 images at 16 s px, width 4, depth 1: a run takes about a second.
TINY = ["--size-orig", "16", "--width", "4", "--depth", "1", "--samples", "8", "--test-samples", "4",
        "--batch-size", "4", "--epochs", "1", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def config_of(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_adam_gets_reg_over_s_squared_at_every_scaling(tmp_path):
    main([*TINY, "--scalings", "1", "2", "3", "--weight-decays", "1e-3", "--out-dir", str(tmp_path)])
    decays = [
        load_checkpoint(ModelFiles(tmp_path, 16, s, 1e-3, 1).state)["optimizer"]["param_groups"][0]["weight_decay"]
        for s in (1, 2, 3)
    ]
    assert decays == [1e-3, 1e-3 / 4, 1e-3 / 9]


def test_the_cosine_schedule_falls_from_lr_to_zero_and_the_constant_one_stays():
    cosine = config_of("--lr", "1e-3", "--lr-schedule", "cosine")
    steps = [0, 100, 200, 300, 400]  # of 400: start, quarter, middle, three quarters, end
    assert [learning_rate(cosine, step, 400) for step in steps] == pytest.approx(
        [1e-3, 8.535533905932737e-4, 5e-4, 1.4644660940672624e-4, 0.0], rel=1e-12, abs=1e-18)
    constant = config_of("--lr", "1e-3")  # the paper's
    assert [learning_rate(constant, step, 400) for step in steps] == [1e-3] * 5


@contextmanager
def observed():
    """What every convolution and every optimizer step of the run inside saw, through global hooks."""
    seen = dict(dtypes=set(), channels_last=set(), lrs=[])

    def conv_hook(module, args, output):
        # Tensors with one channel or 1 x 1 kernels are channels-last and contiguous alike: left out.
        if isinstance(module, torch.nn.Conv2d) and module.in_channels > 1 and module.kernel_size[0] > 1:
            seen["dtypes"].add(output.dtype)
            seen["channels_last"].add(module.weight.is_contiguous(memory_format=torch.channels_last))
            seen["channels_last"].add(args[0].is_contiguous(memory_format=torch.channels_last))

    def step_hook(optimizer, args, kwargs):
        seen["lrs"].append(optimizer.param_groups[0]["lr"])

    handles = [torch.nn.modules.module.register_module_forward_hook(conv_hook),
               register_optimizer_step_pre_hook(step_hook)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def test_speed_and_schedule_options_change_what_they_should(tmp_path):
    # --amp runs a handful of steps only: on CPUs without native bfloat16 (AVX2) it is ~125x slower.
    argv = [*TINY, "--scalings", "1", "--weight-decays", "0", "--epochs", "2"]  # 4 steps
    with observed() as plain:
        main([*argv, "--out-dir", str(tmp_path / "plain")])
    with observed() as options:
        main([*argv, "--amp", "--channels-last", "--lr-schedule", "cosine", "--bn-recalibration", "3",
              "--out-dir", str(tmp_path / "options")])
    assert plain["dtypes"] == {torch.float32} and options["dtypes"] == {torch.bfloat16}
    assert plain["channels_last"] == {False} and options["channels_last"] == {True}
    assert plain["lrs"] == [1e-3] * 4
    assert options["lrs"] == pytest.approx([1e-3, 8.535533905932737e-4, 5e-4, 1.4644660940672624e-4], rel=1e-12)
    tracked = "inc.double_conv.2.num_batches_tracked"  # BatchNorm's count of batches behind its statistics
    final = {
        name: load_checkpoint(ModelFiles(tmp_path / name, 16, 1, 0.0, 2).weights()) for name in ("plain", "options")
    }
    assert final["plain"][tracked] == 4 and final["options"][tracked] == 3  # re-estimated on 3 batches
    # What a run writes is float32 and contiguous whatever the options.
    assert all(v.is_contiguous() and v.dtype in (torch.float32, torch.int64) for v in final["options"].values())


def test_a_read_only_output_folder_is_refused(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o500)
    if os.geteuid() == 0:
        # os.access grants root every write (CI runs as root), so below tmp_path it answers from the
        # mode bits as for the folder's owner: what the trainer's check sees for any other user.
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            if not os.path.abspath(path).startswith(str(tmp_path)):
                return real_access(path, mode, *args, **kwargs)
            owner = stat.S_IMODE(os.stat(path).st_mode) >> 6  # rwx as 4, 2, 1: R_OK, W_OK, X_OK
            return mode & ~owner == 0

        monkeypatch.setattr(os, "access", access)
        assert not os.access(folder, os.W_OK) and os.access(tmp_path, os.W_OK | os.X_OK)
    try:
        with pytest.raises(SystemExit) as exit:
            main([*TINY, "--scalings", "1", "--weight-decays", "0", "--out-dir", str(folder / "run")])
    finally:
        folder.chmod(0o700)
    assert exit.value.code == 2
    assert f"output folder {folder / 'run'} cannot be written ({folder} is not writable)" in capsys.readouterr().err
    assert list(folder.iterdir()) == []
