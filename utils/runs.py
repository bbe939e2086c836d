"""The run folder: the files unet_circles.py writes per model, and how they are found again.

Per model (scaling s, weight decay reg, initialisation, training seed), in the authors' naming
(WD = reg / s^2, Python's str()), with `_init_zoom` after WD for a model started from the zoomed s = 1
model and `_seed_K` for a training seed K other than 0 (so seed 0's files keep the authors' names):
- size_orig_N_scaling_s_weight_decay_WD_n_epochs_E.pt: the weights after epoch E, a plain state dict
  (so these files and the authors' Zenodo files are interchangeable);
- size_orig_N_scaling_s_weight_decay_WD.state.pt / .csv / .json: the newest training state, the
  per-epoch log, and the config of the run that made the model (every Config value, plus its
  scaling, reg, seed and init; once trained, its final epoch and how training stopped). The .json
  makes a folder describe itself: the evaluator rebuilds each model from it, whatever flags made the run.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path


class RunFolderError(ValueError):
    """A run folder that cannot be used as it is; the message is one sentence naming the files."""


def weight_decay(reg, scaling):
    """The weight decay passed to Adam: reg / s^2, so the penalty has the same physical weight."""
    return reg / scaling**2


def checkpoint_name(size_orig, scaling, reg, n_epochs):
    """The authors' file name, e.g. size_orig_128_scaling_2_weight_decay_0.00025_n_epochs_40.pt."""
    return f"size_orig_{size_orig}_scaling_{scaling}_weight_decay_{weight_decay(reg, scaling)}_n_epochs_{n_epochs}.pt"


INITS = ("scratch", "zoom")  # a seeded random initialisation, or the run's s = 1 model zoomed to s (unet_circles.py)


def seed_suffix(seed):
    """What a training seed adds to a file name or an array key: nothing for seed 0, so a one-seed run keeps the
    plain names (the authors' for the U-net)."""
    return f"_seed_{seed}" if seed else ""


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model (scaling, reg, init, seed) in a run folder; epochs is the final epoch."""

    folder: Path
    size_orig: int
    scaling: int
    reg: float
    epochs: int
    seed: int = 0
    init: str = "scratch"

    @property
    def stem(self):
        authors = checkpoint_name(self.size_orig, self.scaling, self.reg, 0).removesuffix("_n_epochs_0.pt")
        return authors + ("_init_zoom" if self.init == "zoom" else "") + seed_suffix(self.seed)

    def weights(self, epoch=None):
        """The weights after `epoch` epochs (default: the final ones)."""
        return Path(self.folder) / f"{self.stem}_n_epochs_{epoch or self.epochs}.pt"

    @property
    def state(self):
        return Path(self.folder) / f"{self.stem}.state.pt"

    @property
    def log(self):
        return Path(self.folder) / f"{self.stem}.csv"

    @property
    def config(self):
        return Path(self.folder) / f"{self.stem}.json"


# What rebuilds and runs a trained model, read from its .json (or, for files without one, a preset).
MODEL_VALUES = ("size_orig", "scaling", "reg", "epochs", "width", "depth", "sigma_noise", "data_seed", "n_samples")
# What every model of one evaluation must share: the images are the same for all of them.
SHARED_VALUES = ("size_orig", "sigma_noise", "data_seed", "n_samples")
CONFIG_NAME = re.compile(r"^size_orig_\d+_scaling_\d+_weight_decay_[^_]+(_init_zoom)?(_seed_\d+)?\.json$")


@dataclass(frozen=True)
class Model:
    """One trained model: the values that rebuild and run it, and where they come from."""

    folder: Path
    size_orig: int
    scaling: int
    reg: float
    epochs: int
    width: int
    depth: int
    sigma_noise: float
    data_seed: int
    n_samples: int
    origin: str  # the config file the values were read from, or "preset NAME" for files without one
    seed: int = 0  # the training seed
    init: str = "scratch"  # INITS
    stopping: str = ""  # how training ended (unet_circles.STOPPINGS); "" for files without a finished config

    @property
    def files(self):
        return ModelFiles(Path(self.folder), self.size_orig, self.scaling, self.reg, self.epochs, self.seed, self.init)

    @property
    def key(self):
        """What tells the models of one folder apart; seed 0's scratch models are the paper's."""
        return self.scaling, self.reg, self.init, self.seed

    @property
    def label(self):
        """e.g. "s = 2, reg = 0.001" for the paper's models, "s = 2, reg = 0.001, zoom, seed 1" for others."""
        return f"s = {self.scaling}, reg = {self.reg:g}" + (", zoom" if self.init == "zoom" else "") + (
            f", seed {self.seed}" if self.seed else "")

    @property
    def configured(self):
        """Whether the values come from the trainer's config (else from a preset)."""
        return self.origin.endswith(".json")

    @classmethod
    def from_values(cls, folder, values, origin):
        """The model of a config's (or a preset's) values; a model stopped early ends at its final_epoch."""
        named = {name: values[name] for name in MODEL_VALUES}
        named["epochs"] = values.get("final_epoch", values["epochs"])
        return cls(Path(folder), **named, origin=origin, seed=values.get("seed", 0), init=values.get("init", "scratch"),
                   stopping=values.get("stopping", ""))


def read_config(path):
    """A model's .json as a dict; a file that is not one of the trainer's configs is a RunFolderError."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(
            f"config {path} cannot be read ({err}); delete it with its model's files, or retrain"
        ) from None
    absent = [name for name in MODEL_VALUES if name not in values] if isinstance(values, dict) else list(MODEL_VALUES)
    if absent:
        raise RunFolderError(f"config {path} lacks {', '.join(absent)}: it is not a config unet_circles.py wrote")
    return values


def configured_models(folder):
    """The models whose config the trainer wrote into folder, by key, whether trained to the end or not."""
    models = {}
    for path in sorted(Path(folder).glob("*.json")):
        if CONFIG_NAME.match(path.name):
            model = Model.from_values(folder, read_config(path), origin=str(path))
            models[model.key] = model
    return models


def find_models(folder, preset_values, preset_name):
    """The models of a folder with their final weights, and one note per model left out.

    Models with a trainer config take its values; a weights file of the preset's table without a
    config (a Zenodo download) takes the preset's values. preset_values: the preset's Config as a dict.
    """
    found, notes = [], []
    configured = configured_models(folder)
    for model in configured.values():
        if model.files.weights().is_file():
            found.append(model)
        else:
            notes.append(f"{model.label}: no final weights {model.files.weights().name} (training not finished, or "
                         "the file deleted or not shipped); left out")
    for scaling, regs in sorted(preset_values["weight_decays"].items()):
        for reg in regs:
            model = Model.from_values(folder, dict(preset_values, scaling=scaling, reg=reg), f"preset {preset_name}")
            if model.key not in configured and model.files.weights().is_file():
                found.append(model)
    found.sort(key=lambda m: m.key)
    check_shared(found)
    return found, notes


def check_shared(models):
    """Every model must agree on the values the images depend on; the first disagreement names both files."""
    for name in SHARED_VALUES:
        for model in models[1:]:
            first, other = models[0], model
            if getattr(other, name) != getattr(first, name):
                raise RunFolderError(
                    f"{first.files.weights().name} ({first.origin}) has {name} = {getattr(first, name)!r} but "
                    f"{other.files.weights().name} ({other.origin}) has {getattr(other, name)!r}; "
                    "evaluate one run at a time "
                    "(move one of them into another folder)"
                )
