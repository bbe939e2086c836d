"""Checkpoint files: the authors' names, atomic writes and safe loading.

A weights file is a plain state dict, as in the authors' release, so files written by
unet_circles.py and the published Zenodo files are interchangeable.
"""

import os
import pickle
import zipfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def weight_decay(reg, scaling):
    """The weight decay passed to Adam: reg / s^2, so the penalty has the same physical weight."""
    return reg / scaling**2


def checkpoint_name(size_orig, scaling, reg, n_epochs):
    """The authors' file name, e.g. size_orig_128_scaling_2_weight_decay_0.00025_n_epochs_40.pt."""
    return f"size_orig_{size_orig}_scaling_{scaling}_weight_decay_{weight_decay(reg, scaling)}_n_epochs_{n_epochs}.pt"


def save_atomic(obj, path):
    """torch.save to a temporary file in the same folder, then rename: a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path, map_location="cpu", mmap=False):
    """torch.load with weights_only=True: a file carrying pickled code is refused, never run.

    mmap=True maps the tensors instead of reading them, so a large file's small entries are cheap to check.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        raise CheckpointError(
            f"checkpoint {path} holds more than tensors and was refused unread (weights_only=True): {first_line}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({err}); delete it and rerun") from None


def load_state_dict(model, path, map_location="cpu"):
    """Load a plain state dict strictly into model; wrong keys or shapes name the file and the tensors."""
    state = load_checkpoint(path, map_location)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a plain state dict of tensors")
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
