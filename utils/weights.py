"""Checkpoint files: atomic writes and safe loading.

A weights file is a plain state dict, as in the authors' release, so files written by
unet_circles.py and the published Zenodo files are interchangeable.
"""

import re
from pathlib import Path

import torch

from .files import write_atomic


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def save_atomic(obj, path):
    """torch.save under a temporary name, then rename: a kill never leaves half a checkpoint."""
    write_atomic(path, lambda file: torch.save(obj, file))


def load_checkpoint(path, map_location="cpu", mmap=False):
    """torch.load with weights_only=True: a file carrying pickled code is refused, never run.

    mmap=True maps the tensors instead of reading them, so a large file's small entries are cheap to check.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises KeyError, EOFError, RuntimeError, ... for damaged files
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:  # a pickled object (code) in the file: it is not run, and never loaded unsafely here
            raise CheckpointError(f"checkpoint {path} holds more than tensors (a pickled {refused.group(1)}) and was "
                                  "refused unread; use the published weights or retrain") from None
        size = path.stat().st_size
        what = "an empty file" if size == 0 else f"{size:,} bytes that torch cannot read as a checkpoint"
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({what}); delete it, then download it "
                              "again or retrain") from None


def read_weights(path, map_location="cpu"):
    """A plain state dict of tensors (the authors' and the trainer's weights files), safely loaded."""
    state = load_checkpoint(path, map_location)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a plain state dict of tensors")
    return state


def load_state_dict(model, path, map_location="cpu", state=None):
    """Load a plain state dict (read from path unless given) strictly into model; wrong keys or shapes name
    the file and the tensors."""
    state = read_weights(path, map_location) if state is None else state
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit this U-net: "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        key, got, want = wrong[0]
        raise CheckpointError(
            f"checkpoint {path} does not fit this U-net: {len(wrong)} tensors of the wrong shape, "
            f"e.g. {key} is {got}, expected {want} (other scaling or width?)"
        )
    model.load_state_dict(state, strict=True)
    return model
