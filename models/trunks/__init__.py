"""The U-net shared by the trainer and the evaluator."""

from .unet import PAPER_DEPTH, PAPER_WIDTH, UNet, fold_for_inference
from .zoom import zoom

__all__ = ["UNet", "fold_for_inference", "zoom", "PAPER_WIDTH", "PAPER_DEPTH"]
