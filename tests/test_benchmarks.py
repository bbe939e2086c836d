"""benchmarks/run.py's count of floating-point work, against the layers' arithmetic written out by hand."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from run import forward_gflop, training_gflop  # noqa: E402


def grown(size, kernel):
    """A convolution's output size with the authors' padding ceil((k - 1) / 2): one pixel more for an even k."""
    return size + 2 * math.ceil((kernel - 1) / 2) - kernel + 1


def conv_flops(c_in, c_out, kernel, size):
    """A multiply and an add per tap, channel pair and output pixel, of a convolution on a size x size input."""
    return 2 * c_in * c_out * kernel**2 * grown(size, kernel) ** 2


def double_conv_flops(c_in, c_out, kernel, size):
    """The second convolution sees the first's output, uncropped (docs/paper.md: the crop is at the block's end)."""
    return conv_flops(c_in, c_out, kernel, size) + conv_flops(c_out, c_out, kernel, grown(size, kernel))


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_the_quick_networks_work_per_image_is_its_layers_arithmetic(s):
    """Width 16, depth 1, 32s px: inc (1 -> 16 -> 16), down1 at half size (16 -> 16 -> 16), up1 (32 -> 16 -> 16),
    the s x s OutConv (16 -> 8) and the 3s x 3s prediction (8 -> 1)."""
    k, n = 3 * s, 32 * s
    by_hand = (double_conv_flops(1, 16, k, n) + double_conv_flops(16, 16, k, n // 2) + double_conv_flops(32, 16, k, n)
               + conv_flops(16, 8, s, n) + conv_flops(8, 1, k, n))
    assert forward_gflop(s, 32, 16, 1) == pytest.approx(by_hand / 1e9, rel=1e-12)
    assert training_gflop(s, 32, 16, 1) == pytest.approx(3 * by_hand / 1e9, rel=1e-12)


def test_the_quick_network_at_s_3_costs_5_3_gflop_a_training_image():
    # At 34 images/s, direct, that is 181 GFLOP/s: the 180 GFLOP/s of a 2048 x 2048 float32 product on 2 cores.
    assert training_gflop(3, 32, 16, 1) == pytest.approx(5.33, abs=0.005)
    assert forward_gflop(1) == pytest.approx(20.03, abs=0.01)  # the paper's network at s = 1, 128 px
