"""The paper's random-circles data: sampling, the authors' CSV format, rasterising, noisy pairs.

A sample is 5 circles, each (cx, cy, r, intensity) drawn from N(0.5, 0.5^2).
Rasterised at N x N pixels, circle k adds its intensity to every pixel (X, Y) with
sqrt((X - floor(cx*N))^2 + (Y - floor(cy*N))^2) <= floor(r*N); a negative floored
radius paints nothing. The same parameters rasterise at N = size_orig * scaling.
"""

from pathlib import Path

import numpy as np
import torch

from .seeds import generator, seed_of

N_CIRCLES = 5  # circles per sample
N_PARAMS = 4  # cx, cy, r, intensity
MU, SIGMA = 0.5, 0.5  # every parameter ~ N(MU, SIGMA^2)
SIGMA_NOISE = 0.07  # std of the Gaussian noise added to the network input
N_SAMPLES = 10_000  # size of the authors' data set
TRAIN_FRACTION = 0.8  # first 80% train, last 20% test


class CirclesFileError(ValueError):
    """A circles CSV that cannot be read; the message names the file and the problem."""


def sample_circles(n_samples=N_SAMPLES, seed=0):
    """Draw circle parameters, (n_samples, 5, 4) float64, from the paper's distribution."""
    rng = np.random.default_rng(seed)
    return rng.normal(MU, SIGMA, size=(n_samples, N_CIRCLES, N_PARAMS))


def split(params, train_fraction=TRAIN_FRACTION):
    """(train, test): the first train_fraction of the samples, then the rest, as the authors split."""
    n_train = int(round(len(params) * train_fraction))
    return params[:n_train], params[n_train:]


def save_circles_csv(path, params):
    """Write parameters in the authors' layout: no header, one sample a row, 20 columns."""
    params = np.asarray(params, dtype=np.float64)
    np.savetxt(path, params.reshape(len(params), -1), delimiter=",", fmt="%.17g")


def load_circles_csv(path):
    """Read the authors' CSV into (n, 5, 4) float64; a malformed file raises CirclesFileError."""
    path = Path(path)
    n_cols = N_CIRCLES * N_PARAMS
    try:
        text = path.read_text()
    except OSError as err:
        raise CirclesFileError(f"cannot read circles file {path}: {err.strerror or err}") from None
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise CirclesFileError(f"circles file {path} is empty; expected {n_cols} comma-separated numbers a row")
    params = np.empty((len(rows), n_cols), dtype=np.float64)
    for i, line in enumerate(rows):
        cells = line.split(",")
        if len(cells) != n_cols:
            raise CirclesFileError(
                f"circles file {path}, row {i + 1}: {len(cells)} columns, expected {n_cols} "
                f"({N_CIRCLES} circles x cx, cy, r, intensity)"
            )
        try:
            params[i] = [float(c) for c in cells]
        except ValueError:
            bad = next(c for c in cells if not _is_float(c))
            raise CirclesFileError(f"circles file {path}, row {i + 1}: {bad.strip()!r} is not a number") from None
    if not np.isfinite(params).all():
        row = int(np.argwhere(~np.isfinite(params))[0, 0])
        raise CirclesFileError(f"circles file {path}, row {row + 1}: contains a non-finite value")
    return params.reshape(-1, N_CIRCLES, N_PARAMS)


def _is_float(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def rasterise(params, size):
    """Clean images (B, 1, size, size) float32 of parameters (B, 5, 4), on the parameters' device.

    The floors are taken in float64 as the authors did, and each pixel's value is the float32
    sum of its circles' intensities added in circle order, so every pixel is bit-identical to
    the authors' image. Work is per row, not per pixel: a circle covers the run of columns
    |X - cx| <= isqrt(r^2 - (Y - cy)^2) in row Y, so each pixel needs one cumulative sum to find
    which circles cover it (a 5-bit code) and one table look-up for the code's sum.
    """
    params = torch.as_tensor(params, dtype=torch.float64)
    device = params.device
    n_batch, n_circles = params.shape[:2]
    # Integer centres and radii: floor(value * N) in float64, then exact integer geometry.
    cx, cy, r = (torch.floor(params[..., i] * size).to(torch.int64) for i in range(3))  # (B, K) each
    rows = torch.arange(size, device=device, dtype=torch.int64)
    rest = r[..., None] ** 2 - (rows - cy[..., None]) ** 2  # (B, K, Y): r^2 - dy^2
    covered = (rest >= 0) & (r[..., None] >= 0)  # the circle reaches row Y; r < 0 paints nothing
    # isqrt of integers below 2^52 through float64 sqrt is exact: sqrt rounds correctly.
    half = torch.sqrt(rest.clamp(min=0).to(torch.float64)).floor().to(torch.int64)  # (B, K, Y)
    start = (cx[..., None] - half).clamp(0, size)  # first covered column
    stop = (cx[..., None] + half + 1).clamp(0, size)  # one past the last
    bit = (2 ** torch.arange(n_circles, device=device, dtype=torch.int64))[None, :, None]  # (1, K, 1)
    runs = covered & (start < stop)
    # A 5-bit code per pixel says which circles cover it. A cumulative sum along X builds it:
    # circle k's bit is added where its run starts and removed where it stops (a run that
    # stops at the border needs no end).
    code = torch.zeros(n_batch, size, size, dtype=torch.int64, device=device)  # (B, Y, X)
    code.scatter_add_(2, start.clamp(max=size - 1).transpose(1, 2), torch.where(runs, bit, 0).transpose(1, 2))
    ends = runs & (stop < size)
    code.scatter_add_(2, stop.clamp(max=size - 1).transpose(1, 2), torch.where(ends, -bit, 0).transpose(1, 2))
    code = code.cumsum_(2)
    # Value of each code: the float32 sum of the covering circles' intensities, in circle order.
    codes = torch.arange(2**n_circles, device=device)
    intensity = params[..., 3].to(torch.float32)  # (B, K)
    table = torch.zeros(n_batch, 2**n_circles, dtype=torch.float32, device=device)  # (B, 2^K)
    for k in range(n_circles):
        table += torch.where((codes >> k) & 1 == 1, intensity[:, k, None], 0.0)
    image = torch.gather(table, 1, code.view(n_batch, -1))  # (B, Y * X)
    return image.view(n_batch, 1, size, size)  # (B, 1, N, N)


def noisy_pairs(params, size, generator=None, sigma_noise=SIGMA_NOISE):
    """(noisy, clean) images (B, 1, N, N): clean plus fresh N(0, sigma_noise^2) noise per pixel."""
    clean = rasterise(params, size)
    noisy = torch.empty_like(clean).normal_(0.0, sigma_noise, generator=generator)
    return noisy.add_(clean), clean


def test_pairs(test_params, size, sigma_noise, data_seed):
    """The fixed noisy test images (T, 1, N, N) on the CPU: the trainer's held-out set and the evaluator's."""
    return noisy_pairs(test_params, size, generator("cpu", seed_of("test", data_seed)), sigma_noise)
