"""Convolution by FFT, tile by tile (overlap-save), for the large kernels of the s = 3 network.

A 9 x 9 kernel costs 81 multiply-adds per pixel and channel pair in a direct convolution. In the
Fourier domain each tile costs one complex multiply-add per frequency and channel pair (a batched
matrix product over the channels), plus the transforms of the tiles. The tile size trades the
share of each tile that is valid output against the size of the transformed weights, which grow
with the tile and with the channel count; TILES holds the sizes that measured fastest.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fft_train import fft_conv2d_train

# (kernel size, smallest output size, tile): where the FFT measured faster than torch's direct
# convolution on a 2-core AVX2 CPU, batch 5, float32 (benchmarks/trials/fft_trial.py; 1.6-2.3x per layer of
# 64-512 channels at 48-384 px). Slower: below 48 px, 6 x 6 kernels (s = 2), and few channels.
TILES = ((9, 256, 64), (9, 96, 32), (9, 48, 16))
MIN_CHANNELS = 64  # input and output channels; the first layer (1 channel in) stays direct
# Kernels this wide and up (the zoomed networks' 3k x 3k at k >= 4) with few channels are transformed
# whole, one tile the size of the padded image (fft_train's convolution): for the quick network zoomed to
# k = 4 / 6 / 8, batch 32, 1.4x / 2.3x / 3.6x faster than direct (README, "One network at any resolution").
WHOLE_IMAGE_KERNEL = 12


def fft_tile(kernel_size, output_size, channels):
    """The tile for this kernel, output size and smaller channel count, or None where direct is faster."""
    for kernel, smallest, tile in TILES:
        if kernel_size == kernel and output_size >= smallest and channels >= MIN_CHANNELS:
            return tile
    return None


def fft_conv2d(x, weight, bias, tile):
    """The same as F.conv2d(x, weight, bias) (no padding, stride 1), computed tile by tile by FFT.

    x: (B, C, H, W), weight: (O, C, k, k), bias: (O,) or None, tile: FFT size T > k.
    Each T x T input tile gives T - k + 1 valid outputs per axis; tiles overlap by k - 1.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kernel, _ = weight.shape
    out_h, out_w = height - kernel + 1, width - kernel + 1
    step = tile - kernel + 1  # valid outputs per tile and axis
    tiles_h, tiles_w = math.ceil(out_h / step), math.ceil(out_w / step)
    x = F.pad(x, [0, tiles_w * step + kernel - 1 - width, 0, tiles_h * step + kernel - 1 - height])
    tiles = x.unfold(2, tile, step).unfold(3, tile, step)  # (B, C, th, tw, T, T)
    spectra = torch.fft.rfft2(tiles)  # (B, C, th, tw, T, T/2+1)
    freqs = tile * (tile // 2 + 1)
    # Correlation is multiplication by the conjugate spectrum; one matrix product over C per frequency.
    kernels = torch.fft.rfft2(weight, s=(tile, tile)).conj().resolve_conj()  # (O, C, T, T/2+1); a lazy
    # conjugate would send the matrix product below down a slow path
    product = torch.bmm(spectra.permute(4, 5, 0, 2, 3, 1).reshape(freqs, -1, channels),
                        kernels.permute(2, 3, 1, 0).reshape(freqs, channels, out_channels))  # (F, B th tw, O)
    product = product.reshape(tile, tile // 2 + 1, batch, tiles_h, tiles_w, out_channels).permute(2, 5, 3, 4, 0, 1)
    out = torch.fft.irfft2(product, s=(tile, tile))[..., :step, :step]  # (B, O, th, tw, step, step)
    out = out.permute(0, 1, 2, 4, 3, 5).reshape(batch, out_channels, tiles_h * step, tiles_w * step)[
        ..., :out_h, :out_w
    ]
    return out if bias is None else out + bias[:, None, None]


class FFTConv2d(nn.Module):
    """A stride-1 Conv2d with the same weights, padding and padding mode, by FFT where TILES says it is faster."""

    def __init__(self, conv):
        super().__init__()
        assert conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
        self.conv = conv

    def forward(self, x):  # (B, C, H, W) -> what self.conv gives
        conv = self.conv
        kernel, (pad_h, pad_w) = conv.kernel_size[0], conv.padding
        channels = min(conv.in_channels, conv.out_channels)
        tile = fft_tile(kernel, x.shape[-1] + 2 * pad_w - kernel + 1, channels)
        if conv.kernel_size[0] != conv.kernel_size[1] or pad_h != pad_w or x.dtype != torch.float32:
            return conv(x)  # also under bfloat16 autocast (--amp), which the FFT does not take
        if kernel >= WHOLE_IMAGE_KERNEL and 2 <= channels < MIN_CHANNELS:
            out = fft_conv2d_train(x, conv.weight, conv.bias, pad_w, conv.padding_mode)
        elif tile is not None:
            mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
            x = F.pad(x.contiguous(), [pad_w, pad_w, pad_h, pad_h], mode=mode)
            out = fft_conv2d(x, conv.weight, conv.bias, tile)
        else:
            return conv(x)
        return conv.trim(out) if hasattr(conv, "trim") else out  # zoom's CentredConv2d keeps less
