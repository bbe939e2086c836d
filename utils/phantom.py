"""The deep image prior's image: the modified Shepp-Logan phantom, rasterised exactly at any resolution.

The phantom is a sum of ellipses (Toft's modified Shepp-Logan table below), each adding its intensity
inside; its levels are 0, 0.1, 0.2, 0.3, 0.4 and 1. A pixel takes the value of the continuous phantom at
its centre. The authors' phantom.npy (256 px) samples the square [-1, 1]^2 at the points -1 + 2i/255,
i.e. at the centres of 256 pixels of width 2/255: its field of view is [-L, L]^2 with L = 256/255. At
any size N the same field of view is cut into N x N pixels, so an image of N * s pixels subdivides
every pixel of N into s x s and samples the same continuous image finer. At N = 256 the centres are
the authors' points and the additions the same, so the image is theirs value for value (a pixel whose
centre lies within a rounding error of an ellipse's border may differ; none does, see tests/test_dip.py).
The row index is y, growing downwards as in the authors' array; the column index is x.
"""

import numpy as np

# (intensity, half-axis along x, half-axis along y, centre x, centre y, rotation in degrees): Toft's
# modified Shepp-Logan phantom, in the order (and with the arithmetic) of the MATLAB phantom() port
# that reproduces the authors' phantom.npy bit for bit.
MODIFIED_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0),
)
REFERENCE_SIZE = 256  # the authors' phantom.npy: 256 x 256 pixel centres from -1 to 1
HALF_WIDTH = REFERENCE_SIZE / (REFERENCE_SIZE - 1)  # L: the field of view is [-L, L]^2
LEVEL_DIGITS = 6  # levels() rounds the sums to this many decimals: 1 - 0.8 - 0.2 is -5.6e-17, not 0


def pixel_centres(size):
    """Positions of the centres of `size` pixels cutting [-L, L], (2i + 1 - N) L / N, each rounded once."""
    i = np.arange(size)
    return (2 * i + 1 - size) * REFERENCE_SIZE / ((REFERENCE_SIZE - 1) * size)


def rasterise(size, ellipses=MODIFIED_SHEPP_LOGAN):
    """The phantom at size x size pixels, float64: per pixel the sum, in table order, of the intensities of
    the ellipses that contain its centre (border included)."""
    y, x = np.meshgrid(pixel_centres(size), pixel_centres(size), indexing="ij")  # (N, N) each: row y, column x
    image = np.zeros((size, size))
    for intensity, a, b, x0, y0, degrees in ellipses:
        phi = degrees * np.pi / 180
        cos, sin = np.cos(phi), np.sin(phi)
        dx, dy = x - x0, y - y0
        inside = ((dx * cos + dy * sin) ** 2) / a**2 + ((dy * cos - dx * sin) ** 2) / b**2 <= 1
        image[inside] += intensity
    return image


def levels(size, ellipses=MODIFIED_SHEPP_LOGAN):
    """The phantom as float32 with its sums rounded to the levels (0, 0.1, ...), for the network and the metrics."""
    return (np.round(rasterise(size, ellipses), LEVEL_DIGITS) + 0.0).astype(np.float32)  # + 0.0: no -0.0
