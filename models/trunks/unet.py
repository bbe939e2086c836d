"""The discretisation-consistent U-net of Habring & Holler, assembled from unet_parts.

UNet(scaling=s) with the default width 64 and depth 4 is the paper's network: its state dict
has the authors' 130 keys and shapes, so their published checkpoints load with strict=True.
"""

import copy

import torch
import torch.nn as nn

from .fft import as_fft, wants_fft
from .unet_parts import Divide, DoubleConv, Down, OutConv, Up, consistent_conv

PAPER_WIDTH = 64  # channels after the first DoubleConv
PAPER_DEPTH = 4  # number of down-steps (and up-steps)


class UNet(nn.Module):
    """U-net for one-channel images whose kernels cover the same physical area at every scaling."""

    def __init__(self, scaling=1, width=PAPER_WIDTH, depth=PAPER_DEPTH, in_channels=1):
        super().__init__()
        if scaling < 1 or depth < 1 or width < 2:
            raise ValueError(f"UNet needs scaling >= 1, depth >= 1 and width >= 2, got {scaling}, {depth}, {width}")
        self.scaling, self.width, self.depth = scaling, width, depth
        self.divisor = scaling**2  # of the prediction; 1 once folded into its weights
        # Channels after inc, down1, ..., down{depth}; the last down-step does not double
        # because bilinear upsampling keeps channels (the authors' `factor = 2`).
        channels = [width * 2**i for i in range(depth)] + [width * 2 ** (depth - 1)]
        self.inc = DoubleConv(
            in_channels, width, scaling=scaling
        )  # 1: a grey image; more: e.g. the deep image prior's input
        for i in range(1, depth + 1):
            setattr(self, f"down{i}", Down(channels[i - 1], channels[i], scaling=scaling))
        for j in range(1, depth + 1):
            out_channels = channels[depth - j - 1] if j < depth else width
            setattr(self, f"up{j}", Up(2 * channels[depth - j], out_channels, scaling=scaling))
        self.out = OutConv(width, width // 2, scaling=scaling)
        self.prediction = consistent_conv(width // 2, 1, scaling, padding_mode="zeros")

    @property
    def multiple(self):
        """Input height and width must be multiples of this (one halving per down-step)."""
        return 2**self.depth

    def forward(self, x):  # (B, in_channels, H, W)
        height, width = x.shape[-2:]
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"UNet of depth {self.depth} needs height and width divisible by {self.multiple}, "
                f"got {height} x {width}"
            )
        skips = [self.inc(x)]  # (B, width, H, W)
        for i in range(1, self.depth + 1):
            skips.append(getattr(self, f"down{i}")(skips[-1]))  # (B, channels[i], H / 2^i, W / 2^i)
        x = skips.pop()
        for j in range(1, self.depth + 1):
            x = getattr(self, f"up{j}")(x, skips.pop())
        x = self.out(x)  # (B, width // 2, H, W)
        x = self.prediction(x)[..., :height, :width]  # (B, 1, H, W)
        # The authors squeeze the channel axis here; we keep it so outputs stay (B, 1, H, W).
        return x / self.divisor


def width_and_depth(state, default):
    """(width, depth) of a UNet state dict: the first conv's channels and the number of down-steps; `default`
    for a dict that is no UNet's (loading it then names the missing keys)."""
    if "inc.double_conv.0.weight" not in state:
        return default
    downs = {key.split(".")[0] for key in state if key.startswith("down")}
    return state["inc.double_conv.0.weight"].shape[0], len(downs)


@torch.no_grad()
def fold_for_inference(model, fft=False):
    """An inference copy of `model` with every division by s^2 and every BatchNorm (with its running
    statistics) folded into the preceding convolution's weights: the same function in float32 up to
    rounding, with three fewer passes over every feature map.

    fft: the DoubleConv convolutions also run by FFT where fft.fft_plan says that measured faster on
    a CPU (the s = 3 network's 9 x 9 kernels at 64 channels or more on 48 px or more, by tiles; a zoomed
    network's 12 x 12 and wider ones with fewer channels, whole images); the same function up to float32
    rounding.
    """
    model = copy.deepcopy(model).eval()
    for block in model.modules():
        if isinstance(block, DoubleConv):
            layers = block.double_conv
            for i in (0, 4):
                conv, divide, norm = layers[i], layers[i + 1], layers[i + 2]
                assert isinstance(divide, Divide) and isinstance(norm, nn.BatchNorm2d)
                gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (C_out,)
                conv.weight.mul_((gain / divide.divisor)[:, None, None, None])
                conv.bias.copy_((conv.bias / divide.divisor - norm.running_mean) * gain + norm.bias)
                layers[i + 1], layers[i + 2] = nn.Identity(), nn.Identity()
                if fft and wants_fft(conv):
                    as_fft(conv)
    for owner, conv in ((model.out, model.out.conv), (model, model.prediction)):
        conv.weight.div_(owner.divisor)
        conv.bias.div_(owner.divisor)
        owner.divisor = 1
    return model
