"""What unet_circles.py feeds its networks, read off one tiny command-line run: fresh noise on the training
images every epoch, and a test set that is the evaluator's (evaluate_unet.py) image for image."""

import pytest
import torch

from evaluate_unet import evaluate
from models.trunks import UNet
from unet_circles import build_parser, config_from_args, main
from utils.circles import rasterise, sample_circles, split

SIZE, SCALINGS, SAMPLES, BATCH, TEST, EPOCHS = 16, (1, 2), 8, 4, 4, 2
FLAGS = ["--size-orig", str(SIZE), "--width", "4", "--depth", "1", "--scalings", *map(str, SCALINGS),
         "--weight-decays", "0", "--samples", str(SAMPLES), "--test-samples", str(TEST), "--batch-size", str(BATCH),
         "--epochs", str(EPOCHS), "--bn-recalibration", "0", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def network_inputs():
    """Records every U-net call's input images per (s, training or not) while the context is open."""
    seen = {}

    def hook(module, args, output):
        if isinstance(module, UNet):
            x = args[0].detach().float()[:, 0]  # (B, N, N)
            seen.setdefault((x.shape[-1] // SIZE, module.training), []).extend(x.clone())

    return seen, torch.nn.modules.module.register_module_forward_hook(hook)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The trainer run once and the evaluator on its folder (eager: the U-net as defined), every network input
    recorded."""
    out = tmp_path_factory.mktemp("run")
    trainer, handle = network_inputs()
    try:
        main([*FLAGS, "--out-dir", str(out / "weights")])
    finally:
        handle.remove()
    evaluator, handle = network_inputs()
    try:
        evaluate(out / "weights", "quick", out / "results", device="cpu", eager=True, n_test=TEST)
    finally:
        handle.remove()
    config = config_from_args(build_parser().parse_args(FLAGS))
    return dict(trainer=trainer, evaluator=evaluator, config=config)


@pytest.mark.parametrize("s", SCALINGS)
def test_the_test_set_is_the_evaluator_s_first_test_images_at_every_epoch(run, s):
    tested = run["trainer"][s, False]  # eval mode: the test set, after every epoch
    assert len(tested) == EPOCHS * TEST
    evaluated = {x.numpy().tobytes() for x in run["evaluator"][s, False]}  # its showcase and test images
    assert all(x.numpy().tobytes() in evaluated for x in tested)
    first = tested[:TEST]
    assert all(torch.equal(a, b) for a, b in zip(tested[TEST:], first, strict=True))  # fixed: the same each epoch
    assert min((a - b).abs().max() for i, a in enumerate(first) for b in first[:i]) > 0.1  # four different images


@pytest.mark.parametrize("s", SCALINGS)
def test_every_epoch_draws_fresh_noise_on_every_training_image(run, s):
    config = run["config"]
    train = split(sample_circles(config.n_samples, seed=config.data_seed))[0][:SAMPLES]
    clean = rasterise(torch.as_tensor(train), SIZE * s)[:, 0]  # (SAMPLES, N, N)
    inputs = torch.stack(run["trainer"][s, True])  # (EPOCHS * SAMPLES, N, N): every image once an epoch
    assert len(inputs) == EPOCHS * SAMPLES
    # Each input is one training image plus noise of std sigma_noise; the nearest clean image is its own.
    distances = ((inputs[:, None] - clean[None]) ** 2).mean((-1, -2))  # (inputs, images)
    which = distances.argmin(1)
    noise = inputs - clean[which]
    assert sorted(which[:SAMPLES].tolist()) == sorted(which[SAMPLES:].tolist()) == list(range(SAMPLES))
    assert noise.std().item() == pytest.approx(config.sigma_noise, rel=0.1)
    # No noise image of the second epoch repeats one of the first, whichever training image it lies on.
    flat = (noise - noise.mean((-1, -2), keepdim=True)).flatten(1)
    flat = flat / flat.norm(dim=1, keepdim=True)
    correlation = flat[SAMPLES:] @ flat[:SAMPLES].T  # (second epoch, first epoch)
    assert correlation.abs().max() < 0.5
