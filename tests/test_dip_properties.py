"""The deep image prior's method, read off one tiny run of the command line at s = 1, 2, 3: what the network is
fed, what Adam's weight decay is, what the fit aims at and what its output averages. Each is checked against
the method's definition (README, "Deep image prior"), computed here by hand."""

import csv

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from deep_image_prior import Fit, build_parser, config_from_args, fit_path, main
from models.trunks import UNet

SIZE, REG, ITERATIONS, SCALINGS = 16, 1e-2, 4, (1, 2, 3)
# The Config block's values except the sizes: no --ema, --clip or --input-noise, so their defaults are what runs.
FLAGS = ["--size-orig", str(SIZE), "--width", "8", "--depth", "1", "--input-channels", "4", "--iterations",
         str(ITERATIONS), "--scalings", *map(str, SCALINGS), "--weight-decays", str(REG), "--device", "cpu",
         "--checkpoint-every", str(ITERATIONS), "--stop-drop", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The command line run once, with every network call's input and output and every Adam step's weight
    decay recorded per s (s from the size of the input, and from the first kernel's width, 3s)."""
    out = tmp_path_factory.mktemp("dip")
    seen = dict(inputs={s: [] for s in SCALINGS}, outputs={s: [] for s in SCALINGS},
                decays={s: set() for s in SCALINGS})

    def forward_hook(module, args, output):
        if isinstance(module, UNet):
            s = args[0].shape[-1] // SIZE
            seen["inputs"][s].append(args[0].detach().clone())
            seen["outputs"][s].append(output.detach().double().clone())

    def step_hook(optimizer, args, kwargs):
        group = optimizer.param_groups[0]
        seen["decays"][group["params"][0].shape[-1] // 3].add(group["weight_decay"])

    handles = [torch.nn.modules.module.register_module_forward_hook(forward_hook),
               register_optimizer_step_pre_hook(step_hook)]
    try:
        main([*FLAGS, "--output-dir", str(out)])
    finally:
        for handle in handles:
            handle.remove()
    seen["arrays"] = {s: np.load(out / "arrays" / f"scaling{s}.npz") for s in SCALINGS}
    seen["folder"] = out
    return seen


def test_every_s_sees_the_s_1_input_repeated_over_s_x_s_blocks_at_every_iteration(run):
    one = run["inputs"][1]
    assert len(one) == ITERATIONS and one[0].shape == (1, 4, SIZE, SIZE)
    assert not torch.equal(one[0], one[1])  # perturbed anew every iteration
    for s in (2, 3):
        assert [x.shape for x in run["inputs"][s]] == [(1, 4, SIZE * s, SIZE * s)] * ITERATIONS
        for x, base in zip(run["inputs"][s], one, strict=True):
            for dy in range(s):
                for dx in range(s):
                    assert torch.equal(x[..., dy::s, dx::s], base)


def test_adam_gets_reg_over_s_squared_at_every_s(run):
    assert {s: sorted(decays) for s, decays in run["decays"].items()} == {
        1: [pytest.approx(REG)], 2: [pytest.approx(REG / 4)], 3: [pytest.approx(REG / 9)]}


@pytest.mark.parametrize("s", SCALINGS)
def test_the_output_is_the_exponential_average_with_0_99_of_the_iterates(run, s):
    """DIP's output: 0.99 times the average so far plus 0.01 times the new iterate, from the first iterate on."""
    outputs = run["outputs"][s]
    average = outputs[0]
    for output in outputs[1:]:
        average = 0.99 * average + 0.01 * output
    assert run["arrays"][s][f"final_reg{REG:g}"] == pytest.approx(average[0, 0].numpy(), abs=1e-6)
    assert (outputs[-1] - outputs[0]).abs().max() > 1e-3  # the iterates move: another factor would show


@pytest.mark.parametrize("s", SCALINGS)
def test_the_noisy_image_is_clipped_to_0_1_and_is_what_the_fit_aims_at(run, s):
    arrays = run["arrays"][s]
    noisy, clean = arrays["noisy"], arrays["ground_truth"]
    assert noisy.min() == 0 and noisy.max() == 1
    assert (noisy == 0).mean() > 0.1  # about half of the black background's pixels, whose noise is negative
    grey = (clean > 0.15) & (clean < 0.45)  # levels 0.2 to 0.4: two noise deviations from 0, six from 1
    assert np.std(noisy[grey] - clean[grey]) == pytest.approx(25 / 255, rel=0.2)
    config = config_from_args(build_parser().parse_args([*FLAGS, "--output-dir", str(run["folder"])]))
    with open(fit_path(config, Fit(config.seeds[0], s, REG), ".csv")) as file:
        first_loss = float(next(csv.DictReader(file))["loss"])
    # The first iteration's loss: the mean squared distance of the first iterate to that noisy image.
    assert first_loss == pytest.approx(np.mean((run["outputs"][s][0][0, 0].numpy() - noisy) ** 2), rel=1e-5)
