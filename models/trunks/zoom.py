"""One trained s = 1 network seen on a k times finer grid: the paper's theorem as an experiment.

A 3 x 3 kernel stands for a piecewise-constant function on 3 x 3 cells of the s = 1 grid. On a grid
k times finer the same function is the 3k x 3k kernel that repeats each weight over a k x k block;
the U-net's division by s^2 = k^2 turns the sum over k^2 times as many pixels back into the same
integral. The division acts on the bias too, so each conv bias is multiplied by k^2. BatchNorm,
ReLU and the x2 bilinear upsampling act pixel-wise or per level and stay as they are.

On an input constant over k x k blocks, a zoomed conv gives the s = 1 output at each block's centre
and interpolates linearly between centres (a box kernel on a box input makes a hat). With an even
kernel (even k) the authors' padding and crop-at-the-end put that centre half a pixel off, once per
conv: centre=True crops the other way so every DoubleConv and the OutConv + prediction pair keep the
s = 1 positions (see `CentredConv2d`).

MaxPool(2) covers 2 x 2 pixels, an area that shrinks with k. pooling="physical" takes the maximum
over the s = 1 area instead, a 2k x 2k window moved by 2 pixels, so the pooled map keeps the U-net's
size and the zoomed network approaches one function of the continuous image as k grows.
"""

import copy

import torch
import torch.nn as nn

from .unet import UNet
from .unet_parts import DoubleConv, Down, same_padding

POOLINGS = ("pixels", "physical")  # MaxPool(2) at every k, or over the s = 1 area (2k x 2k, stride 2)


class CentredConv2d(nn.Conv2d):
    """A Conv2d that drops its first output row and column: after two even-kernel convs with the authors'
    padding (each half a pixel late), the pair's output then sits where an odd kernel's would."""

    @property
    def offset(self):
        """Output rows and columns dropped at the start: 1 for an even kernel, else 0 (fft.as_fft keeps it)."""
        return 1 - self.kernel_size[0] % 2

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H', W'), one row and column fewer than Conv2d's
        return super().forward(x)[..., self.offset :, self.offset :]


@torch.no_grad()
def zoom_conv(conv, k):
    """The conv of an s = 1 layer on a k times finer grid, to be followed by a division by k^2: its
    h x w kernel repeated over k x k blocks into a kh x kw one (authors' padding, same padding mode)
    and its bias times k^2."""
    kernel = conv.kernel_size[0] * k
    zoomed = nn.Conv2d(conv.in_channels, conv.out_channels, kernel, padding=same_padding(kernel),
                       padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    zoomed.weight.copy_(conv.weight.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3))  # (O, I, kh, kw)
    zoomed.bias.copy_(conv.bias * k**2)  # the division by k^2 that follows acts on the bias too
    return zoomed


def physical_pool(k):
    """Max over the s = 1 pooling window on a k times finer grid; MaxPool2d(2) itself at k = 1.

    The window of pooled pixel i covers pixels 2i - (k - 1) .. 2i + k, centred where MaxPool(2)'s is
    (2i + 1/2); for odd k the pooled pixel at the centre of a k-block sees exactly the s = 1 window.
    Padding counts as -inf, so the border takes the maximum over what lies in the image.
    """
    return nn.MaxPool2d(kernel_size=2 * k, stride=2, padding=k - 1)


def zoom(model, k, pooling="physical", centre=True):
    """The s = 1 U-net `model` as an s = k network, in a new UNet(scaling=k) in model's mode, device and dtype.

    pooling: "physical" (default) pools over the s = 1 area (physical_pool(k)); "pixels" keeps MaxPool(2).
    centre: for even k, crop so that no conv moves the image (CentredConv2d; default); no effect for odd k.
    Every variant has UNet(scaling=k)'s state dict, but only pooling="pixels", centre=False is what
    UNet(scaling=k) computes from it. zoom(model, 1) computes exactly what model computes, for every variant.
    The defaults are the s = 1 network's operations on the finer grid; benchmarks/trials/zoom_trial.py measures
    the others: the authors' crops move the image by 3 fine pixels at every even k (interior MSE 0.054
    instead of 0.0088 at k = 2), and MaxPool(2) gives a slightly, consistently larger error.
    """
    if not isinstance(model, UNet) or model.scaling != 1:
        got = f"a UNet with scaling {model.scaling}" if isinstance(model, UNet) else type(model).__name__
        raise ValueError(f"zoom needs a UNet trained at scaling 1, got {got}")
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise ValueError("zoom needs the trained network, not its folded inference copy; zoom first, then fold")
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"zoom factor k must be a positive integer, got {k!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    reference = next(model.parameters())
    in_channels = model.inc.double_conv[0].in_channels
    zoomed = UNet(scaling=k, width=model.width, depth=model.depth, in_channels=in_channels)
    state = dict(model.state_dict())  # BatchNorm parameters and running statistics stay as they are
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):  # 3 x 3 -> 3k x 3k; the OutConv's 1 x 1 -> k x k
            bigger = zoom_conv(conv, k)
            prefix = f"{name}." if name else ""
            state[f"{prefix}weight"], state[f"{prefix}bias"] = bigger.weight, bigger.bias
    zoomed.load_state_dict(state, strict=True)
    if pooling == "physical":
        for block in zoomed.modules():
            if isinstance(block, Down):
                block.maxpool_conv[0] = physical_pool(k)
    if centre and k % 2 == 0:
        for block in zoomed.modules():
            if isinstance(block, DoubleConv):
                block.double_conv[4] = _centred(block.double_conv[4])
        zoomed.prediction = _centred(zoomed.prediction)
    return zoomed.to(reference.device, reference.dtype).train(model.training)


def _centred(conv):
    """The same conv (same parameters, same state-dict keys) as a CentredConv2d."""
    centred = copy.copy(conv)
    centred.__class__ = CentredConv2d
    return centred
