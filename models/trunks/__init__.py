"""The U-net shared by the trainer and the evaluator."""

from .unet import PAPER_DEPTH, PAPER_WIDTH, UNet, fold_for_inference, width_and_depth
from .zoom import zoom

__all__ = ["UNet", "fold_for_inference", "width_and_depth", "zoom", "PAPER_WIDTH", "PAPER_DEPTH"]
