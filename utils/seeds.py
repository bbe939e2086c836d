"""Seeded randomness without generator state to carry: every draw has its own seed, derived from its keys."""

import numpy as np
import torch

# Independent streams of random draws. unet_circles.py: init, order, noise, test, bn;
# deep_image_prior.py adds its own names below them.
STREAMS = {"init": 0, "order": 1, "noise": 2, "test": 3, "bn": 4,
           # deep_image_prior.py: the phantom's noise per s, the fixed input, the network's initialisation
           # per s, the input's perturbation per iteration
           "dip_noise": 5, "dip_input": 6, "dip_init": 7, "dip_perturb": 8}


def seed_of(stream, *keys):
    """A seed for one stream of draws, e.g. seed_of("noise", seed, epoch, step, rank).

    Every epoch's order and every step's noise have their own seed, so a run resumed at any step
    draws exactly what an uninterrupted run draws.
    """
    return int(np.random.SeedSequence([STREAMS[stream], *keys]).generate_state(1)[0])


def generator(device, seed):
    return torch.Generator(device).manual_seed(seed)
