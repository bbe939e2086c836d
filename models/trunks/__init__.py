"""The U-net shared by the trainer and the evaluator."""

from .unet import PAPER_DEPTH, PAPER_WIDTH, UNet

__all__ = ["UNet", "PAPER_WIDTH", "PAPER_DEPTH"]
