"""Convolution by FFT in training (models/trunks/fft.py): the same outputs and gradients as the
direct convolution, layer by layer and through a whole U-net, and the same checkpoints."""

import copy
import ctypes
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.trunks import UNet
from models.trunks.fft import FFTConv2d, fft_conv2d_whole, fft_for_training, fft_size, reuse_freed_memory


def relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_fft_sizes_are_even_and_smooth():
    assert [fft_size(n) for n in (104, 56, 70, 71, 38, 39, 105)] == [104, 56, 70, 72, 40, 40, 108]


@pytest.mark.parametrize("kernel, padding_mode, channels_last", [
    (9, "reflect", True), (6, "reflect", False), (9, "zeros", False), (6, "zeros", True), (3, "reflect", False)])
def test_layer_output_and_every_gradient_equal_the_direct_ones(kernel, padding_mode, channels_last):
    torch.manual_seed(kernel)
    conv = nn.Conv2d(5, 7, kernel, padding=(kernel - 1 + 1) // 2, padding_mode=padding_mode).double()
    x = torch.randn(3, 5, 19, 22, dtype=torch.float64, requires_grad=True)  # odd and even sides, not square
    expected = conv(x)  # float64 reference, direct
    grad = torch.randn_like(expected)
    wanted = torch.autograd.grad(expected, [x, conv.weight, conv.bias], grad)
    conv, x, grad, expected = conv.float(), x.detach().float(), grad.float(), expected.detach()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = fft_conv2d_whole(x, conv.weight, conv.bias, conv.padding[0], padding_mode, scale=1 / 4)
    got = torch.autograd.grad(out, [x, conv.weight, conv.bias], grad)
    assert out.shape == expected.shape  # with an even kernel one pixel larger than x
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert got[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert relative(out, expected.float() / 4) < 2e-6
    for g, w in zip(got, wanted, strict=True):  # the scale 1/4 carries into every gradient
        assert relative(g, w.float() / 4) < 2e-6


def trained_bits(model, x, target):
    """Output and parameter gradients of one training-mode step, and BatchNorm's updated statistics."""
    model.zero_grad()
    out = model(x)
    F.mse_loss(out, target).backward()
    stats = [b.clone() for n, b in model.named_buffers() if "running" in n]
    return out.detach(), [p.grad.clone() for p in model.parameters()], stats


@pytest.mark.parametrize("scaling", [2, 3])
def test_unet_trains_the_same_function_with_fft_convolutions(scaling):
    torch.manual_seed(scaling)
    direct = UNet(scaling=scaling, width=4, depth=1)
    with torch.no_grad():  # weights far from BatchNorm's identity, biases that matter
        for p in direct.parameters():
            p.add_(0.3 * torch.randn_like(p))
    fft = fft_for_training(copy.deepcopy(direct))
    # Of the six DoubleConv convolutions all but the first (one input channel) run by FFT, their
    # Divides folded in, and so does the prediction layer.
    assert sum(isinstance(m, FFTConv2d) for m in fft.modules()) == 5 + 1
    assert sum(type(m).__name__ == "Divide" for m in fft.modules()) == 1
    assert fft.state_dict().keys() == direct.state_dict().keys()
    only_nine = fft_for_training(copy.deepcopy(direct), min_kernel=9)
    assert sum(isinstance(m, FFTConv2d) for m in only_nine.modules()) == (6 if scaling == 3 else 0)
    size = 16 * scaling
    x = torch.rand(3, 1, size, size)
    target = torch.rand(3, 1, size, size)
    out, grads, stats = trained_bits(direct, x, target)
    assert out.std() > 0.1 * out.abs().mean()  # the output depends on the input
    fft_out, fft_grads, fft_stats = trained_bits(fft.to(memory_format=torch.channels_last),
                                                 x.contiguous(memory_format=torch.channels_last), target)
    assert relative(fft_out, out) < 1e-5
    for name, a, b in zip([n for n, _ in direct.named_parameters()], fft_grads, grads, strict=True):
        # A convolution's bias before training-mode BatchNorm has no effect: its exact gradient is 0.
        if name.endswith((".double_conv.0.bias", ".double_conv.4.bias")):
            assert a.abs().max() < 1e-5 * max(g.abs().max() for g in grads)
        else:
            assert relative(a, b) < 1e-4, name
    for a, b in zip(fft_stats, stats, strict=True):
        assert relative(a, b) < 1e-5


def test_a_rerun_gives_bitwise_the_same_step():
    torch.manual_seed(0)
    model = fft_for_training(UNet(scaling=3, width=4, depth=1))
    x, target = torch.rand(2, 1, 48, 48), torch.rand(2, 1, 48, 48)
    first = trained_bits(copy.deepcopy(model), x, target)
    second = trained_bits(copy.deepcopy(model), x, target)
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1], strict=True))


def test_checkpoints_load_into_the_plain_unet_and_bfloat16_goes_direct():
    torch.manual_seed(1)
    fft = fft_for_training(UNet(scaling=2, width=4, depth=1)).eval()
    plain = UNet(scaling=2, width=4, depth=1).eval()
    plain.load_state_dict(fft.state_dict(), strict=True)
    fft.load_state_dict(plain.state_dict(), strict=True)  # and back: a resume loads either way
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert relative(fft(x), plain(x)) < 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fft(x)
        assert low.dtype == torch.bfloat16  # the direct convolution ran, under autocast
        assert relative(low.float(), plain(x)) < 0.1


@pytest.mark.parametrize("scaling", [2, 3])
def test_a_bfloat16_training_step_divides_by_s_squared_as_the_plain_network_does(scaling):
    """Under autocast (--amp) the FFT layers take the direct convolution: the step must still divide by s^2.
    Training-mode BatchNorm normalises a wrong scale away in the output, not in its running statistics."""
    torch.manual_seed(scaling)
    plain = UNet(scaling=scaling, width=4, depth=1)
    fft = fft_for_training(copy.deepcopy(plain))
    x, target = torch.rand(3, 1, 16 * scaling, 16 * scaling), torch.rand(3, 1, 16 * scaling, 16 * scaling)
    before = [b.clone() for n, b in plain.named_buffers() if "running" in n]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads, stats = trained_bits(plain, x, target)
        fft_out, fft_grads, fft_stats = trained_bits(fft, x, target)
    assert out.dtype == fft_out.dtype == torch.bfloat16 and relative(fft_out.float(), out.float()) < 1e-2
    for a, b in zip(fft_grads, grads, strict=True):
        assert relative(a, b) < 1e-2
    for a, b, start in zip(fft_stats, stats, before, strict=True):  # moved by 0.1 x (the batch's mean, variance - 1)
        assert relative(a - start, b - start) < 1e-2


def test_malloc_setting_applies_on_linux_and_is_skipped_without_glibc(monkeypatch):
    if sys.platform.startswith("linux"):
        assert reuse_freed_memory() is True

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    assert reuse_freed_memory() is False
