"""Train the discretisation-consistent U-net of Habring & Holler on random circles.

The same network is trained at resolution factors s = 1, 2, 3 (images size_orig * s wide, kernels
3s wide) and several weight decays; Adam gets weight_decay = reg / s^2. Hyperparameters stand in
the block below (the `paper` preset); named presets change some of them and every one can be
overridden on the command line, e.g.

    python unet_circles.py --preset quick
    python unet_circles.py --scalings 3 --weight-decays 1e-3      # exactly one model
"""

from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------------------
# Hyperparameters: the paper's values. Edit here, pick a preset, or override with --flags.
# ----------------------------------------------------------------------------------------------
PAPER_WEIGHT_DECAYS = {  # reg values trained per scaling s, in the authors' order
    1: (0.0, 1e-3, 1e-2, 1e-1, 0.5, 0.75, 1.25),
    2: (1e-3, 1e-2, 1e-1, 0.0),
    3: (1e-2, 1e-1, 1e-3, 0.0),
}


@dataclass
class Config:
    # data
    size_orig: int = 128  # base resolution N in pixels at s = 1; images are size_orig * s wide
    n_samples: int = 10_000  # circle samples in the data set; the first 80% train, the last 20% test
    samples: int = 8_000  # training samples used per epoch (at most the 80% train split)
    sigma_noise: float = 0.07  # std of the Gaussian noise added to the input, fresh every epoch
    data_seed: int = 0  # seed of the circle parameters (the data set itself)
    # model
    width: int = 64  # channels after the first DoubleConv (the paper: 64)
    depth: int = 4  # number of down-steps; image size must be divisible by 2^depth (the paper: 4)
    # training
    scalings: tuple = (1, 2, 3)  # resolution factors s to train, each >= 1
    weight_decays: dict = field(default_factory=lambda: dict(PAPER_WEIGHT_DECAYS))  # s -> reg values
    epochs: int = 40  # passes over the training samples
    batch_size: int = 32  # images per optimizer step (summed over all processes)
    lr: float = 1e-3  # Adam learning rate
    checkpoint_every: int = 5  # write a checkpoint every this many epochs (and at the end)
    seed: int = 0  # seed of initialisation, batch order and noise
    out_dir: str = "data/weights/paper"  # where checkpoints and logs go


PRESETS = {
    "paper": {},  # PAPER.md's values, as above
    "quick": dict(  # a small CPU configuration; see README, "The quick preset"
        size_orig=32,
        samples=2_000,
        width=16,
        depth=1,
        weight_decays={1: (0.0, 1e-3, 1e-2, 1e-1), 2: (0.0, 1e-3), 3: (0.0, 1e-3)},
        epochs=10,
        checkpoint_every=5,
        out_dir="data/weights/quick",
    ),
}


def preset_config(name):
    """The Config of a named preset."""
    return Config(**PRESETS[name])
