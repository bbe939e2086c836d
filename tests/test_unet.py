"""The U-net: the authors' checkpoint layout, parameter counts, shapes, and an independent reference forward."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from models.trunks import UNet, fft, fold_for_inference
from models.trunks.fft import WHOLE_IMAGE, fft_conv2d_tiled, fft_plan, fft_tile
from utils.circles import noisy_pairs, sample_circles
from utils.runs import checkpoint_name
from utils.weights import CheckpointError, load_state_dict, save_atomic

# docs/paper.md counts every element of the state dict, BatchNorm running statistics included.
PAPER_COUNTS = {1: 17_277_395, 2: 69_043_187, 3: 155_319_507}
BN_BUFFERS = 2 * 4416 + 18  # running mean and var of 4,416 BatchNorm channels, 18 num_batches_tracked


def noisy_circles(n, height, width, seed):
    """n noisy circle images (n, 1, height, width), the kind the network is trained on."""
    noisy, _ = noisy_pairs(sample_circles(n, seed=seed), max(height, width), torch.Generator().manual_seed(seed))
    return noisy[..., :height, :width]


def calibrated(model, height, width, n=8):
    """model in eval mode, its BatchNorm statistics estimated on n noisy circle images of this size.

    Random weights with the /s^2 divisions and BatchNorm's default or made-up statistics crush the
    signal: the output hardly depends on the input (at s = 2 not at all), and a test comparing two
    forwards is blind. Statistics of the images the network sees, as training leaves them, keep it.
    """
    torch.optim.swa_utils.update_bn([noisy_circles(n, height, width, seed=1000)], model)
    return model.eval()


def assert_depends_on_input(out, rtol, atol):
    """out (2, ...): the outputs of two different inputs lie further apart than 100x the tolerance
    atol + rtol * max|out| that the test then compares with, so a wrong network cannot pass unseen."""
    tolerance = atol + rtol * out.abs().max().item()
    assert (out[0] - out[1]).abs().max().item() > 100 * tolerance


def paper_layout(s):
    """The authors' 130 keys and shapes at scaling s, written out from docs/paper.md's description."""
    k = 3 * s
    blocks = [("inc", 1, 64, 64)]
    blocks += [(f"down{i}.maxpool_conv.1", cin, cout, cout) for i, (cin, cout) in
               enumerate([(64, 128), (128, 256), (256, 512), (512, 512)], 1)]
    blocks += [(f"up{i}.conv", cin, cout, cin // 2) for i, (cin, cout) in
               enumerate([(1024, 256), (512, 128), (256, 64), (128, 64)], 1)]
    layout = []
    for name, cin, cout, mid in blocks:
        for idx, (a, b) in ((0, (cin, mid)), (4, (mid, cout))):
            layout += [(f"{name}.double_conv.{idx}.weight", (b, a, k, k)), (f"{name}.double_conv.{idx}.bias", (b,))]
            bn = f"{name}.double_conv.{idx + 2}"
            layout += [(f"{bn}.{p}", (b,)) for p in ("weight", "bias", "running_mean", "running_var")]
            layout += [(f"{bn}.num_batches_tracked", ())]
    # The state dict lists conv 0, BN 2, conv 4, BN 6 in that order.
    ordered = []
    for name, *_ in blocks:
        ordered += [entry for entry in layout if entry[0].startswith(f"{name}.double_conv.")]
    ordered += [("out.conv.weight", (32, 64, s, s)), ("out.conv.bias", (32,))]
    ordered += [("prediction.weight", (1, 32, k, k)), ("prediction.bias", (1,))]
    return ordered


@pytest.mark.parametrize("s", [1, 2, 3])
def test_state_dict_has_the_authors_keys_shapes_and_counts(s):
    state = UNet(scaling=s).state_dict()
    assert [(key, tuple(v.shape)) for key, v in state.items()] == paper_layout(s)
    assert len(state) == 130
    assert sum(v.numel() for v in state.values()) == PAPER_COUNTS[s]
    assert sum(p.numel() for p in UNet(scaling=s).parameters()) == PAPER_COUNTS[s] - BN_BUFFERS


def reference_forward(model, x):
    """docs/paper.md's forward written with torch.nn.functional alone, reading the model's tensors."""
    s = model.scaling
    state = model.state_dict()

    def conv(x, prefix, mode):
        w = state[f"{prefix}.weight"]
        p = math.ceil((w.shape[-1] - 1) / 2)
        x = F.pad(x, [p] * 4, mode="reflect" if mode == "reflect" else "constant")
        return F.conv2d(x, w, state[f"{prefix}.bias"])

    def double_conv(x, name):
        h, w = x.shape[-2:]
        for idx in (0, 4):
            x = conv(x, f"{name}.double_conv.{idx}", "reflect") / s**2
            bn = f"{name}.double_conv.{idx + 2}"
            x = F.batch_norm(x, state[f"{bn}.running_mean"], state[f"{bn}.running_var"],
                             state[f"{bn}.weight"], state[f"{bn}.bias"], training=False)
            x = F.relu(x)
        return x[..., :h, :w]

    h, w = x.shape[-2:]
    skips = [double_conv(x, "inc")]
    for i in range(1, model.depth + 1):
        skips.append(double_conv(F.max_pool2d(skips[-1], 2), f"down{i}.maxpool_conv.1"))
    y = skips.pop()
    for j in range(1, model.depth + 1):
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
        y = double_conv(torch.cat([skips.pop(), y], 1), f"up{j}.conv")
    y = conv(y, "out.conv", "zeros")[..., :h, :w] / s**2
    y = conv(y, "prediction", "zeros")[..., :h, :w]
    return y / s**2


@pytest.mark.parametrize("s", [1, 2, 3])
def test_forward_matches_the_functional_reference(s):
    torch.manual_seed(s)
    model = UNet(scaling=s, width=4, depth=2)
    for module in model.modules():  # BatchNorm scales and shifts that are not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    height, width = 12 * s, 16 * s  # not square: the crops of the s = 2 network's even kernels show
    calibrated(model, height, width)
    x = noisy_circles(2, height, width, seed=s)
    with torch.no_grad():
        out = model(x)
        assert_depends_on_input(out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out, reference_forward(model, x), rtol=1e-5, atol=1e-6)


def test_full_size_forward_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = calibrated(UNet(scaling=1), 128, 128, n=2)  # running statistics that a lost buffer would change
    x = noisy_circles(2, 128, 128, seed=0)
    path = tmp_path / checkpoint_name(128, 1, 0.0, 40)
    save_atomic(model.state_dict(), path)
    assert path.name == "size_orig_128_scaling_1_weight_decay_0.0_n_epochs_40.pt"
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
    other = load_state_dict(UNet(scaling=1).eval(), path)
    with torch.inference_mode():
        out = model(x)
        assert out.shape == (2, 1, 128, 128)
        assert_depends_on_input(out, rtol=0, atol=1e-6)
        assert torch.equal(out, other(x))


@pytest.mark.parametrize("s", [1, 2, 3])
def test_output_shape_at_128s_with_the_papers_depth(s):
    model = UNet(scaling=s, width=2).eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 1, 128 * s, 128 * s)).shape == (2, 1, 128 * s, 128 * s)


def test_sizes_not_divisible_by_two_to_the_depth_are_rejected():
    with pytest.raises(ValueError, match="divisible by 16, got 100 x 128"):
        UNet(width=2)(torch.zeros(1, 1, 100, 128))


def test_checkpoint_names_follow_the_authors():
    assert checkpoint_name(128, 2, 1e-3, 40) == "size_orig_128_scaling_2_weight_decay_0.00025_n_epochs_40.pt"
    assert checkpoint_name(128, 3, 1e-3, 40) == (
        "size_orig_128_scaling_3_weight_decay_0.00011111111111111112_n_epochs_40.pt")
    assert checkpoint_name(128, 1, 0, 5) == "size_orig_128_scaling_1_weight_decay_0.0_n_epochs_5.pt"


def test_wrong_scaling_truncated_file_and_pickled_code_are_refused(tmp_path):
    path = tmp_path / "w.pt"
    save_atomic(UNet(scaling=1, width=4, depth=2).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"w\.pt does not fit this U-net: 12 tensors of the wrong shape"):
        load_state_dict(UNet(scaling=2, width=4, depth=2), path)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_state_dict(UNet(scaling=1, width=4, depth=3), path)
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"t\.pt is truncated or corrupt"):
        load_state_dict(UNet(scaling=1, width=4, depth=2), truncated)
    marker = tmp_path / "pwned"
    torch.save({"x": Evil(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused unread"):
        load_state_dict(UNet(scaling=1, width=4, depth=2), tmp_path / "evil.pt")
    assert not marker.exists()


class Evil:
    """Unpickling this would create a marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("s", [1, 2, 3])
def test_folded_inference_copy_computes_the_same_function(s):
    torch.manual_seed(10 + s)
    model = calibrated(UNet(scaling=s, width=4, depth=2), 16 * s, 16 * s)
    folded = fold_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = noisy_circles(2, 16 * s, 16 * s, seed=10 + s)
    with torch.inference_mode():
        expected = model(x)
        assert_depends_on_input(expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    assert model.state_dict().keys() == UNet(scaling=s, width=4, depth=2).state_dict().keys()  # original untouched


@pytest.mark.parametrize("kernel, tile, size", [(9, 16, 40), (9, 32, 57), (6, 16, 23), (3, 8, 10)])
def test_fft_convolution_equals_the_direct_one(kernel, tile, size):
    torch.manual_seed(kernel + size)
    x, weight, bias = torch.randn(2, 5, size, size + 3), torch.randn(7, 5, kernel, kernel), torch.randn(7)
    expected = F.conv2d(x, weight, bias)  # output sizes not a multiple of the tile's valid part
    out = fft_conv2d_tiled(x, weight, bias, tile)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_fft_tiles_only_where_measured_faster():
    assert [fft_tile(9, n, 64) for n in (384, 192, 96, 48, 24)] == [64, 32, 32, 16, None]
    assert fft_tile(6, 256, 64) is None and fft_tile(3, 384, 64) is None  # s = 2 and 1: direct
    assert fft_tile(9, 384, 1) is None and fft_tile(9, 96, 16) is None  # few channels: direct


@pytest.mark.parametrize("kernel, c_in, c_out, size, for_training, plan", [
    (9, 16, 16, 96, True, WHOLE_IMAGE),  # the quick network in training: whole images from 6 x 6 on
    (6, 32, 16, 64, True, WHOLE_IMAGE),
    (9, 512, 512, 48, True, WHOLE_IMAGE),  # training never tiles (the tiles have no backward of their own)
    (3, 16, 16, 32, True, None),  # too few taps
    (9, 1, 16, 96, True, None),  # the first layer, one input channel
    (9, 16, 16, 96, False, None),  # a forward alone pays from 12 x 12 with few channels
    (12, 16, 16, 128, False, WHOLE_IMAGE),  # the zoomed quick network at k = 4
    (9, 64, 64, 384, False, 64),  # the paper's s = 3 network: tiles, as TILES says
    (9, 512, 512, 24, False, None),
    (6, 256, 256, 256, False, None),  # its s = 2 network: direct
])
def test_one_rule_picks_direct_whole_image_or_tiles(kernel, c_in, c_out, size, for_training, plan):
    conv = torch.nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, padding_mode="reflect", device="meta")
    assert fft_plan(conv, size, for_training) == plan


def test_folded_copy_with_fft_computes_the_same_function(monkeypatch):
    calls = []
    monkeypatch.setattr(fft, "fft_conv2d_tiled", lambda *args: calls.append(args[-1]) or fft_conv2d_tiled(*args))
    torch.manual_seed(3)
    model = calibrated(UNet(scaling=3, width=64, depth=1), 48, 48, n=4)  # 64 channels at 48 px: FFT, tile 16
    x = noisy_circles(2, 48, 48, seed=3)
    with torch.inference_mode():
        expected = model(x)
        assert_depends_on_input(expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
        out = fold_for_inference(model, fft=True)(x)
    # inc's second conv (64 -> 64) and up1's two convs (128 -> 64 -> 64) at 48 px; inc's first has 1 channel in
    assert calls == [16, 16, 16]
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
