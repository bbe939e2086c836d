"""Zoom: an s = 1 network on a k times finer grid, checked against values known by hand."""

import pytest
import torch
import torch.nn as nn

from models.trunks import UNet, zoom
from models.trunks.unet_parts import Divide, consistent_conv
from models.trunks.zoom import CentredConv2d, physical_pool, zoom_conv


def trained_like(width=4, depth=1, seed=0):
    """An s = 1 UNet in eval mode with random weights (three times torch's initial ones, whose outputs
    shrink layer by layer) and random BatchNorm statistics, so no layer is trivial."""
    torch.manual_seed(seed)
    model = UNet(scaling=1, width=width, depth=depth)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(3)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def blocks(x, k):
    """Every pixel of x repeated over a k x k block: the same image on a k times finer grid."""
    return x.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


VARIANTS = [dict(), dict(pooling="pixels", centre=False), dict(pooling="physical", centre=False)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_zoom_by_one_is_the_model(variant):
    model = trained_like(depth=2)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        y = model(x)
        assert y.std() > 0.05 and (model(torch.randn(2, 1, 16, 16)) - y).abs().max() > 0.05  # depends on the input
        assert torch.equal(zoom(model, 1, **variant)(x), y)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_single_conv_turns_a_step_into_a_ramp_three_s1_pixels_wide(k):
    # A 3 x 3 mean filter (bias 0.25) on a step from 0 to 1 between pixels 3 and 4 of an 8 pixel wide
    # image gives 0.25, 0.25 + 1/3, 0.25 + 2/3, 1.25 at s = 1. Zoomed, the step lies between fine pixels
    # 4k - 1 and 4k and the output climbs by 1/(3k) a pixel over 3k pixels: 3 s = 1 pixels at every k.
    # Centred on the jump for odd k; for even k half a pixel late (0.5 + 0.25 at pixel 4k itself).
    conv = consistent_conv(1, 1, scaling=1)
    with torch.no_grad():
        conv.weight.fill_(1 / 9), conv.bias.fill_(0.25)
        step = (torch.arange(8 * k) >= 4 * k).float().expand(1, 1, 8 * k, 8 * k)  # (1, 1, 8k, 8k)
        out = nn.Sequential(zoom_conv(conv, k), Divide(k**2))(step)
    by_hand = {
        1: [0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1],
        2: [0] * 6 + [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6] + [1] * 5,
        3: [0] * 8 + [m / 9 for m in range(1, 9)] + [1] * 8,
    }[k]
    expected = torch.tensor(by_hand) + 0.25
    assert out.shape[-1] == 8 * k + (k % 2 == 0)  # an even kernel's output is a pixel wider (cropped later)
    torch.testing.assert_close(out[0, 0, : 8 * k, : 8 * k], expected.expand(8 * k, 8 * k), atol=1e-6, rtol=0)


def interpolation_matrix(n, k):
    """(n k, n) weights of fine pixels on coarse ones: fine pixel kP + k // 2 is coarse pixel P, linear in between."""
    matrix = torch.zeros(n * k, n)
    for q in range(k // 2, k * (n - 1) + k // 2 + 1):
        t = (q - k // 2) / k
        p, frac = int(t), t - int(t)
        matrix[q, p] += 1 - frac
        if frac:
            matrix[q, p + 1] += frac
    return matrix


@pytest.mark.parametrize("k", [2, 3])
def test_first_conv_on_block_input_is_the_s1_output_at_block_centres_and_linear_between(k):
    # A box kernel on a box input makes a hat: the zoomed conv gives the s = 1 conv's value at the
    # centre of each k x k block (pixel kP + k // 2: half a pixel past the centre for even k) and
    # interpolates linearly between centres; it is not the s = 1 output repeated over blocks.
    model = trained_like()
    n = 12
    x = torch.randn(1, 1, n, n)
    first = slice(0, 3)  # conv, / s^2, BatchNorm: before any ReLU or pooling
    with torch.no_grad():
        coarse = model.inc.double_conv[first](x)  # (1, C, n, n)
        fine = zoom(model, k).inc.double_conv[first](blocks(x, k))[..., : n * k, : n * k]  # (1, C, nk, nk)
    assert coarse.std() > 0.1
    inner = slice(k + k // 2, k * (n - 2) + k // 2 + 1)  # from coarse pixel 1's centre to pixel n - 2's
    a = interpolation_matrix(n, k)
    expected = a @ coarse @ a.T  # bilinear interpolation between block centres
    torch.testing.assert_close(fine[..., inner, inner], expected[..., inner, inner], atol=1e-5, rtol=1e-5)
    centres = slice(k + k // 2, k * (n - 1), k)
    torch.testing.assert_close(fine[..., centres, centres], coarse[..., 1:-1, 1:-1], atol=1e-5, rtol=1e-5)
    assert (fine[..., inner, inner] - blocks(coarse, k)[..., inner, inner]).abs().max() > 0.1


@pytest.mark.parametrize("k", [2, 3])
def test_zoomed_state_dict_loads_into_unet_of_scaling_k(k):
    # The zoom that UNet(scaling=k) computes from the state dict alone: MaxPool(2), the authors' crops.
    model = trained_like()
    zoomed = zoom(model, k, pooling="pixels", centre=False)
    plain = UNet(scaling=k, width=4, depth=1)
    shapes = [(key, v.shape) for key, v in zoomed.state_dict().items()]
    assert shapes == [(key, v.shape) for key, v in plain.state_dict().items()]
    plain.load_state_dict(zoomed.state_dict(), strict=True)
    x = torch.randn(1, 1, 16 * k, 16 * k)
    with torch.no_grad():
        y = zoomed(x)
        assert y.std() > 0.05
        assert torch.equal(plain.eval()(x), y)
    # The default (physical pooling, centred) changes no tensor: its state dict loads as well.
    plain.load_state_dict(zoom(model, k).state_dict(), strict=True)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_physical_pooling_takes_the_s1_window_at_block_centres(k):
    x = torch.randn(1, 2, 8, 8)
    coarse = nn.MaxPool2d(2)(x)  # (1, 2, 4, 4)
    fine = physical_pool(k)(blocks(x, k))  # (1, 2, 4k, 4k)
    assert fine.shape[-1] == 4 * k
    centres = slice((k - 1) // 2, 4 * k, k)
    assert torch.equal(fine[..., centres, centres], coarse)


@pytest.mark.parametrize("pooling", ["pixels", "physical"])
def test_centred_zoom_keeps_a_mirror_symmetric_image_symmetric(pooling):
    # With left-right symmetric kernels, a left-right symmetric image gives a symmetric output at
    # s = 1. At k = 2 the authors' even kernels move the image by half a pixel per conv, so only the
    # centred zoom keeps the symmetry (away from the border band of 3k pixels: the OutConv's crop
    # drops its last column, which the prediction conv then misses on one side); at k = 3 both do.
    model = trained_like(depth=2, seed=1).double()  # float64: the output reaches 10^3
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(m.weight + m.weight.flip(-1))
        x = torch.randn(1, 1, 16, 8, dtype=torch.float64)
        x = torch.cat([x, x.flip(-1)], dim=-1)  # (1, 1, 16, 16), symmetric
        y = model(x)
        assert y.std() > 0.05
        torch.testing.assert_close(y, y.flip(-1))
        for k, centre, band in ((2, True, 6), (3, False, 0), (3, True, 0)):
            z = zoom(model, k, pooling=pooling, centre=centre)(blocks(x, k))[..., band : 16 * k - band]
            torch.testing.assert_close(z, z.flip(-1))
        z = zoom(model, 2, pooling=pooling, centre=False)(blocks(x, 2))[..., 6:-6]
        assert (z - z.flip(-1)).abs().max() > 0.05 * z.abs().max()


def test_centred_double_conv_is_the_authors_one_pixel_earlier():
    model = trained_like()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        authors = zoom(model, 2, centre=False).inc(x)
        centred = zoom(model, 2, centre=True).inc(x)
    assert isinstance(zoom(model, 2, centre=True).inc.double_conv[4], CentredConv2d)
    torch.testing.assert_close(centred[..., 2:-2, 2:-2], authors[..., 3:-1, 3:-1])  # away from the reflect border


def test_zoom_refuses_what_it_cannot_zoom():
    with pytest.raises(ValueError, match="scaling 1, got a UNet with scaling 2"):
        zoom(UNet(scaling=2, width=4, depth=1), 2)
    from models.trunks import fold_for_inference

    with pytest.raises(ValueError, match="zoom first, then fold"):
        zoom(fold_for_inference(trained_like()), 2)
    with pytest.raises(ValueError, match="positive integer"):
        zoom(trained_like(), 1.5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        zoom(trained_like(), 2, pooling="average")


@pytest.mark.parametrize("k", [4, 5])
def test_folded_fft_inference_of_a_zoomed_network_is_the_zoomed_network(k):
    """At k >= 4 the zoomed network's 3k x 3k kernels go by whole-image FFT in fold_for_inference
    (fft.MIN_KERNEL_FORWARD), at even k every second one a CentredConv2d, cropped as it crops."""
    from models.trunks import fold_for_inference
    from models.trunks.fft import MIN_KERNEL_FORWARD, WHOLE_IMAGE, FFTConv2d, fft_plan

    zoomed = zoom(trained_like(width=4, depth=1), k)
    fast = fold_for_inference(zoom(trained_like(width=4, depth=1), k), fft=True)
    # Every DoubleConv convolution but the first (one input channel); at even k each block's second is centred.
    wide = [m for m in fast.modules() if isinstance(m, FFTConv2d) and m.kernel_size[0] >= MIN_KERNEL_FORWARD]
    assert len(wide) == 5 and all(fft_plan(m, 8 * k, m.for_training) == WHOLE_IMAGE for m in wide)
    assert [m.offset for m in wide] == ([0] * 5 if k % 2 else [1, 0, 1, 0, 1])
    x, other = torch.rand(2, 1, 8 * k, 8 * k), torch.rand(2, 1, 8 * k, 8 * k)
    with torch.no_grad():
        y, y_fast = zoomed(x), fast(x)
        moved = (zoomed(other) - y).abs().max()
    assert moved > 1e-3  # the output depends on the input, so the comparison below can see a wrong kernel
    torch.testing.assert_close(y_fast, y, rtol=0, atol=1e-5 * moved.item())
