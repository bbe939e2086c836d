"""Regularity in numbers: how sharply a network's output keeps the ground truth's edges.

The ground truth is piecewise constant, so along an image row it jumps between two neighbouring
pixels. An edge is such a jump of height at least MIN_JUMP with no other jump within GAP * s
pixels on either side, so the truth is flat over the window of GAP * s + 1 pixels each side.
Along every edge the output is normalised to u = (output - before) / (after - before), so u is 0
on the truth's level before the jump and 1 on the level after it, whichever way the jump goes.

- rise width: the distance in pixels between the points where u, linearly interpolated between
  pixels, crosses 0.1 and 0.9 (of each, the crossing along the row nearest the jump); inf if u
  crosses one of them nowhere in the row. A perfect step has 0.8; a continuous output's grows with s.
- jump ratio: the largest step of u between neighbouring pixels in the window, i.e. the output's
  largest step divided by the truth's jump. A perfect step has 1; a continuous output's falls
  like 1/s, because its jump spreads over more and more pixels.
- PSNR and SSIM against the ground truth, with the truth's value range as data range.
"""

import math

import numpy as np

MIN_JUMP = 0.1  # smallest ground-truth jump between neighbouring pixels that counts as an edge
# A jump between levels 0.1 apart comes out a few ulps either side of 0.1 (0.3 - 0.2 is 0.09999999999999998
# in float64): it counts. Far below any difference the random circles' intensities make.
JUMP_TOLERANCE = 1e-6
GAP = 3  # no other jump within GAP * s pixels of an edge: one kernel width (3s) of flat truth
LOW, HIGH = 0.1, 0.9  # the rise width runs from the 10% to the 90% crossing
BORDER = 3  # the interior leaves out BORDER * s pixels on every side: the prediction conv's reach (3s pixels)
GROUND_TRUTH = "ground_truth"  # the reg value that marks the reference rows (truth against itself)
NOISY_INPUT = "noisy_input"  # the reg value of the rows measuring the network's input itself


def find_edges(truth, scaling):
    """Rows, columns j (the jump lies between pixels j and j + 1) and levels before / after of a 2-D truth's edges."""
    truth = np.asarray(truth, dtype=np.float64)
    reach = GAP * scaling
    steps = np.diff(truth, axis=1)  # (H, W - 1): step k lies between pixels k and k + 1
    jumps = (steps != 0).astype(np.int64)
    # Jumps among steps j - reach .. j + reach, from a cumulative sum over the zero-padded steps.
    counts = np.cumsum(np.pad(jumps, ((0, 0), (reach + 1, reach))), axis=1)
    near = counts[:, 2 * reach + 1 :] - counts[:, : -2 * reach - 1]  # (H, W - 1)
    j = np.arange(steps.shape[1])
    inside = (j >= reach) & (j + 1 + reach < truth.shape[1])  # the window lies in the image
    rows, cols = np.nonzero((np.abs(steps) >= MIN_JUMP - JUMP_TOLERANCE) & (near == 1) & inside)
    return rows, cols, truth[rows, cols], truth[rows, cols + 1]


def edge_measures(output, truth, scaling):
    """(rise_width_px, jump_ratio), one entry per edge of the 2-D truth, measured on the 2-D output."""
    rows, cols, before, after = find_edges(truth, scaling)
    reach = GAP * scaling
    output = np.asarray(output, dtype=np.float64)
    u = (output[rows] - before[:, None]) / (after - before)[:, None]  # (E, W): 0 before the jump, 1 after it
    window = u[np.arange(len(rows))[:, None], cols[:, None] + np.arange(-reach, reach + 2)]  # (E, 2 reach + 2)
    jump_ratio = np.diff(window, axis=1).max(axis=1)
    # The crossings are searched along the whole row, nearest the jump first: a network's plateau
    # that misses the truth's level by a little more than 10% still has its rise measured.
    centre = cols[:, None] + 0.5  # where the jump lies
    low, high = _crossing(u, LOW, centre), _crossing(u, HIGH, centre)
    rise_width = np.abs(high - low)
    rise_width[np.isnan(rise_width)] = np.inf  # the output never crosses one of the levels in this row
    return rise_width, jump_ratio


def _crossing(u, level, centre):
    """Per row of u, the linearly interpolated position where u crosses level nearest to centre; nan if none."""
    left, right = u[:, :-1], u[:, 1:]
    crosses = ((left - level) * (right - level) <= 0) & (left != right)
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.arange(left.shape[1]) + (level - left) / (right - left)
    distance = np.where(crosses, np.abs(position - centre), np.inf)
    nearest = position[np.arange(len(u)), distance.argmin(axis=1)]
    return np.where(np.isfinite(distance.min(axis=1)), nearest, np.nan)


def psnr(output, truth, data_range=None):
    """Peak signal-to-noise ratio in dB (data range: the truth's, unless given); inf for a perfect output."""
    from skimage.metrics import peak_signal_noise_ratio  # pulls in scipy.stats: a second of start-up, only when used

    truth = np.asarray(truth, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return float(
            peak_signal_noise_ratio(truth, np.asarray(output, np.float64), data_range=data_range or np.ptp(truth))
        )


def ssim(output, truth, data_range=None):
    """Structural similarity (scikit-image's defaults: 7 x 7 window; data range: the truth's, unless given)."""
    from skimage.metrics import structural_similarity

    truth = np.asarray(truth, dtype=np.float64)
    return float(structural_similarity(truth, np.asarray(output, np.float64), data_range=data_range or np.ptp(truth)))


def interior(image, scaling):
    """The image without the band of BORDER * s pixels along its edges, which the prediction conv's zero padding
    darkens."""
    band = BORDER * scaling
    return np.asarray(image)[..., band:-band, band:-band]


def summary(output, truth, scaling):
    """One image's numbers: PSNR, SSIM, and the medians over its edges (nan where it has none)."""
    rise_width, jump_ratio = edge_measures(output, truth, scaling)
    median_width = float(np.median(rise_width)) if len(rise_width) else float("nan")
    return dict(
        psnr=psnr(output, truth),
        ssim=ssim(output, truth),
        rise_width_px=median_width,
        rise_width_phys=median_width / np.shape(truth)[1],  # in units of the image width
        jump_ratio=float(np.median(jump_ratio)) if len(jump_ratio) else float("nan"),
        n_edges=len(rise_width),
    )


# ----------------------------------------------------------------------------------------------
# Over a test set: medians with 95% bootstrap intervals
# ----------------------------------------------------------------------------------------------
SET_MEASURES = ("jump_ratio", "rise_width_px", "rise_width_phys", "psnr", "psnr_interior", "ssim", "ssim_interior")
N_BOOT = 2000  # bootstrap resamples
LEVEL = 0.95  # coverage of the intervals


def median_interval(values, groups=None, seed=0, n_boot=N_BOOT):
    """(median, low, high): the median of values and its 95% percentile-bootstrap interval.

    groups: the image each value belongs to (edges of one image are not independent); then whole
    images are resampled and their edges pooled, as the median itself pools them. Seeded: the same
    values give the same interval. inf values (a rise that never completes) count as the largest; nan
    values (undefined, e.g. the PSNR of an image whose truth is constant) are left out.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.arange(len(values)) if groups is None else np.asarray(groups)
    defined = ~np.isnan(values)
    values, groups = values[defined], np.unique(groups[defined], return_inverse=True)[1]
    if not len(values):
        return math.nan, math.nan, math.nan
    order = np.argsort(values, kind="stable")
    values, groups = values[order], groups[order]
    rng = np.random.default_rng(seed)
    n_groups = groups.max() + 1
    counts = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=n_boot)  # (n_boot, n_groups)
    # How many values of each group lie at or before each sorted value; a resample's weight up to each sorted
    # value is then one matrix product (integers far below 2^24: exact in float32).
    before = np.zeros((n_groups, len(values)), dtype=np.float32)
    before[groups, np.arange(len(values))] = 1
    before = np.cumsum(before, axis=1)  # (n_groups, n_values)
    medians = np.empty(n_boot)
    for rows in np.array_split(np.arange(n_boot), max(1, n_boot * len(values) // 2**24)):  # chunks of ~64 MB
        weights = counts[rows].astype(np.float32) @ before  # (rows, n_values): resampled values up to each one
        medians[rows] = _sorted_median(values, weights)
    low, high = np.quantile(medians, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], method="inverted_cdf")
    # The estimate by the same rule, as the resample that takes every value once.
    median = _sorted_median(values, np.arange(1, len(values) + 1, dtype=np.float32)[None])[0]
    return float(median), float(low), float(high)


def _sorted_median(values, weights):
    """Per row of weights (rows, n_values), the median of the sorted values each taken as often as its count:
    weights holds the counts up to and including each value. The mean of the two middle values, the middle one
    for an odd total (np.median's rule); an inf among them gives inf."""
    total = weights[:, -1:]
    lower = values[np.argmax(2 * weights >= total, axis=1)]  # the first value at which half the total is reached
    upper = values[np.argmax(2 * weights > total, axis=1)]  # the first past half: the same one for an odd total
    return (lower + upper) / 2


def set_summary(outputs, truths, scaling, seed=0, row_block=None):
    """One row of metrics_summary.csv for outputs (n, H, W) against truths (n, H, W) at resolution factor s.

    Edge measures are pooled over every edge of every image; PSNR and SSIM are per image, on the whole
    image and on its interior. Each measure gets its median and the interval as NAME_low, NAME_high.
    row_block: the bootstrap resamples the edges of each block of this many rows of an image together,
    instead of whole images (for a single image, whose intervals would otherwise be one point).
    """
    per_edge = {"jump_ratio": [], "rise_width_px": [], "image": []}
    per_image = {name: [] for name in ("psnr", "psnr_interior", "ssim", "ssim_interior")}
    for i, (output, truth) in enumerate(zip(outputs, truths, strict=True)):
        width, ratio = edge_measures(output, truth, scaling)
        per_edge["rise_width_px"].append(width)
        per_edge["jump_ratio"].append(ratio)
        if row_block:  # a group per block of rows: (image, block) numbered image-major
            rows = find_edges(truth, scaling)[0]
            per_edge["image"].append(i * math.ceil(np.shape(truth)[0] / row_block) + rows // row_block)
        else:
            per_edge["image"].append(np.full(len(width), i))
        data_range = np.ptp(truth)
        if not data_range:  # no circle in view: PSNR and SSIM are undefined, and left out of their medians
            for values in per_image.values():
                values.append(math.nan)
            continue
        per_image["psnr"].append(psnr(output, truth, data_range))
        per_image["ssim"].append(ssim(output, truth, data_range))
        per_image["psnr_interior"].append(psnr(interior(output, scaling), interior(truth, scaling), data_range))
        per_image["ssim_interior"].append(ssim(interior(output, scaling), interior(truth, scaling), data_range))
    edges = {name: np.concatenate(values) for name, values in per_edge.items()}
    edges["rise_width_phys"] = edges["rise_width_px"] / np.shape(truths)[-1]  # in units of the image width
    row = dict(n_images=len(outputs), n_edges=len(edges["image"]))
    for name in SET_MEASURES:
        values, groups = (edges[name], edges["image"]) if name in edges else (per_image[name], None)
        row[name], row[f"{name}_low"], row[f"{name}_high"] = median_interval(values, groups, seed)
    return row
