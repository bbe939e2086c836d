"""Parts of the discretisation-consistent U-net (Habring & Holler), after milesial/Pytorch-UNet.

At resolution factor `scaling` = s every kernel is s times wider (3s instead of 3) and every
convolution's output is divided by s^2, so a kernel covers the same physical area and has the
same integral at every resolution. Module indices match the authors' state-dict keys.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def same_padding(kernel_size):
    """The authors' padding ceil((k - 1) / 2); for an even k the output grows by one pixel."""
    return math.ceil((kernel_size - 1) / 2)


class Divide(nn.Module):
    """Divide by a constant (s^2); a parameter-free module so the authors' indices line up."""

    def __init__(self, divisor):
        super().__init__()
        self.divisor = divisor

    def forward(self, x):
        return x / self.divisor

    def extra_repr(self):
        return f"divisor={self.divisor}"


def consistent_conv(in_channels, out_channels, scaling, padding_mode="reflect"):
    """A 3s x 3s convolution with the authors' padding."""
    kernel_size = 3 * scaling
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=same_padding(kernel_size), padding_mode=padding_mode
    )


class DoubleConv(nn.Module):
    """(conv 3s -> /s^2 -> BatchNorm -> ReLU) twice, then cropped to the input's height and width."""

    def __init__(self, in_channels, out_channels, mid_channels=None, scaling=1):
        super().__init__()
        mid_channels = mid_channels or out_channels
        self.double_conv = nn.Sequential(
            consistent_conv(in_channels, mid_channels, scaling),  # 0
            Divide(scaling**2),  # 1
            nn.BatchNorm2d(mid_channels),  # 2
            nn.ReLU(inplace=True),  # 3
            consistent_conv(mid_channels, out_channels, scaling),  # 4
            Divide(scaling**2),  # 5
            nn.BatchNorm2d(out_channels),  # 6
            nn.ReLU(inplace=True),  # 7
        )

    def forward(self, x):  # (B, C_in, H, W)
        height, width = x.shape[-2:]
        # With an even kernel (s = 2) each conv adds a pixel; the authors crop once, at the end.
        return self.double_conv(x)[..., :height, :width]  # (B, C_out, H, W)


class Down(nn.Module):
    """Max-pool by 2, then DoubleConv."""

    def __init__(self, in_channels, out_channels, scaling=1):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, scaling=scaling))

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear upsampling by 2, concatenation with the skip tensor, then DoubleConv(in, out, in // 2)."""

    def __init__(self, in_channels, out_channels, scaling=1):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_channels, out_channels, in_channels // 2, scaling=scaling)

    def forward(self, x, skip):  # x: (B, C_x, h, w), skip: (B, C_skip, H, W)
        x = self.up(x)  # (B, C_x, 2h, 2w)
        diff_y = skip.shape[-2] - x.shape[-2]
        diff_x = skip.shape[-1] - x.shape[-1]
        x = F.pad(x, [diff_x // 2, diff_x - diff_x // 2, diff_y // 2, diff_y - diff_y // 2])
        return self.conv(torch.cat([skip, x], dim=1))  # (B, C_out, H, W)


class OutConv(nn.Module):
    """An s x s convolution (zero padding), cropped to the input size and divided by s^2."""

    def __init__(self, in_channels, out_channels, scaling=1):
        super().__init__()
        self.divisor = scaling**2  # 1 once folded into the weights (fold_for_inference)
        self.conv = nn.Conv2d(in_channels, out_channels, scaling, padding=same_padding(scaling))

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H, W)
        height, width = x.shape[-2:]
        return self.conv(x)[..., :height, :width] / self.divisor
