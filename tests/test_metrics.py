"""Edge measures on hand-made images whose rise widths and jump ratios are known by hand."""

import math

import numpy as np
import pytest
import torch

from utils import metrics
from utils.circles import rasterise


def step_row(width=20, jump_at=9, before=0.0, after=1.0):
    """A 1 x width truth that jumps between pixels jump_at and jump_at + 1."""
    row = np.full((1, width), before)
    row[0, jump_at + 1 :] = after
    return row


@pytest.mark.parametrize("before, after", [(0.0, 1.0), (0.3, -0.5)])
def test_perfect_step_has_width_0_8_and_ratio_1(before, after):
    truth = step_row(before=before, after=after)
    width, ratio = metrics.edge_measures(truth, truth, scaling=1)
    # u goes 0 -> 1 between pixels 9 and 10: it crosses 0.1 at 9.1 and 0.9 at 9.9.
    assert width == pytest.approx([0.8])
    assert ratio == pytest.approx([1.0])


def test_linear_ramp_over_4_pixels_has_width_3_2_and_ratio_0_25():
    truth = step_row()
    output = truth.copy()
    output[0, 8:13] = [0.0, 0.25, 0.5, 0.75, 1.0]  # 4 steps of a quarter of the jump
    width, ratio = metrics.edge_measures(output, truth, scaling=1)
    assert width == pytest.approx([3.2])  # 0.1 at 8.4, 0.9 at 11.6
    assert ratio == pytest.approx([0.25])


@pytest.mark.parametrize("before, after", [(0.0, 1.0), (1.0, 0.0)])
def test_the_jump_ratio_counts_steps_in_the_jump_s_direction_only(before, after):
    truth = step_row(before=before, after=after)  # the jump between pixels 9 and 10; the window is pixels 6 to 13
    u = np.zeros(20)
    u[9:] = [0.3, 0.6, 0.8, 1.0, 0.1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # a ramp from pixel 8 to 12, a dip of 0.9 at 13
    _, ratio = metrics.edge_measures(before + (after - before) * u[None], truth, scaling=1)
    assert ratio == pytest.approx([0.3])  # the largest step with the jump; the dip's 0.9 goes the other way


def test_crossing_nearest_the_jump_counts_and_an_incomplete_rise_is_infinite():
    truth = step_row()
    output = truth.copy()
    output[0, 6] = 0.95  # a spike far left: crossings of 0.1 and 0.9 at 5.x and 6.x
    width, _ = metrics.edge_measures(output, truth, scaling=1)
    assert width == pytest.approx([0.8])  # the spike's crossings are farther from the jump
    width, _ = metrics.edge_measures(0.5 * truth, truth, scaling=1)  # reaches only half the jump
    assert width.tolist() == [math.inf]


def test_edges_are_isolated_jumps_of_at_least_0_1_with_the_window_inside_the_image():
    truth = np.zeros((4, 30))
    truth[0, 10:] = 0.09  # too small a jump
    truth[1, 10:] = 1.0
    truth[1, 13:] = 2.0  # jumps 3 pixels apart: neither is an edge at s = 1
    truth[2, 10:] = 1.0
    truth[2, 14:] = 2.0  # 4 pixels apart: both are edges at s = 1
    truth[3, 2:] = 1.0  # 2 pixels from the border: its window leaves the image
    rows, cols, before, after = metrics.find_edges(truth, scaling=1)
    assert rows.tolist() == [2, 2] and cols.tolist() == [9, 13]
    assert before.tolist() == [0.0, 1.0] and after.tolist() == [1.0, 2.0]
    assert len(metrics.find_edges(truth, scaling=2)[0]) == 0  # at s = 2 the gap must exceed 6 pixels


def test_sharp_edges_keep_ratio_1_at_every_s_and_a_blurred_output_loses_it():
    """A fixed physical blur spreads over s times more pixels: its jump ratio falls, its rise width grows."""
    off = [2.0, 2.0, -1.0, 0.0]  # paints nothing
    params = torch.tensor([[[0.5, 0.5, 0.35, 1.0], [0.45, 0.4, 0.12, -0.6], off, off, off]], dtype=torch.float64)
    ratios, widths = [], []
    for s in (1, 2, 3):
        truth = rasterise(params, 48 * s)[0, 0].numpy().astype(np.float64)  # a disc with a darker disc inside
        width, ratio = metrics.edge_measures(truth, truth, s)
        assert len(width) > 10 and np.allclose(width, 0.8) and np.allclose(ratio, 1.0)
        # Blur by a box of 2s pixels (the same physical width at every s), along rows.
        kernel = np.ones(2 * s) / (2 * s)
        blurred = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, truth)
        width, ratio = metrics.edge_measures(blurred, truth, s)
        ratios.append(np.median(ratio))
        widths.append(np.median(width))
    # A box of 2s pixels turns a step into a ramp of 2s steps of 1/(2s): ratio 1/(2s), width 0.8 * 2s.
    assert ratios == pytest.approx([1 / 2, 1 / 4, 1 / 6])
    assert widths == pytest.approx([1.6, 3.2, 4.8])


def test_summary_of_truth_and_of_a_shifted_output():
    truth = np.zeros((16, 16))
    truth[:, 8:] = 2.0  # one edge per row, data range 2
    exact = metrics.summary(truth, truth, scaling=1)
    assert exact["psnr"] == math.inf and exact["ssim"] == pytest.approx(1.0)
    assert exact["n_edges"] == 16 and exact["jump_ratio"] == pytest.approx(1.0)
    assert exact["rise_width_px"] == pytest.approx(0.8) and exact["rise_width_phys"] == pytest.approx(0.8 / 16)
    shifted = metrics.summary(truth + 0.2, truth, scaling=1)
    assert shifted["psnr"] == pytest.approx(10 * math.log10(2.0**2 / 0.2**2))  # MSE 0.04
    assert shifted["jump_ratio"] == pytest.approx(1.0)  # an offset keeps the step


def test_a_constant_sample_has_a_zero_width_interval():
    assert metrics.median_interval(np.full(40, 0.7)) == (0.7, 0.7, 0.7)
    assert metrics.median_interval(np.full(40, 0.7), groups=np.arange(40) // 4) == (0.7, 0.7, 0.7)


def test_the_interval_contains_the_median_is_seeded_and_as_wide_as_theory_says():
    values = np.random.default_rng(3).normal(0.0, 1.0, 400)
    median, low, high = metrics.median_interval(values, seed=0)
    assert median == np.median(values) and low < median < high
    assert metrics.median_interval(values, seed=0) == (median, low, high)  # seeded: the same every time
    # The median of n normal draws has standard error sqrt(pi / 2) / sqrt(n): a 95% interval about 0.25 wide.
    assert 0.75 * 2 * 1.96 * math.sqrt(math.pi / 2 / 400) < high - low < 1.25 * 2 * 1.96 * math.sqrt(math.pi / 2 / 400)


def test_resampling_whole_images_widens_the_interval_of_values_that_share_an_image():
    """Edges of one image are alike; resampling images, not edges, shows how little 20 images really tell."""
    rng = np.random.default_rng(0)
    image_means = rng.normal(0.0, 1.0, 20)
    values = np.repeat(image_means, 50) + rng.normal(0.0, 0.05, 1000)  # 50 nearly equal edges per image
    _, low, high = metrics.median_interval(values)
    _, group_low, group_high = metrics.median_interval(values, groups=np.repeat(np.arange(20), 50))
    assert group_high - group_low > 4 * (high - low)


def test_the_interval_is_the_95_percent_one_of_the_median_s_exact_bootstrap_distribution():
    # Resampling 401 distinct values, the median is the k-th smallest (from 0) when at least 201 draws are
    # among the k + 1 smallest and fewer among the k: P(median <= k) = P(Binomial(401, (k + 1) / 401) >= 201).
    from scipy.stats import binom

    k = np.arange(401)
    below = binom.sf(200, 401, (k + 1) / 401)
    low, high = np.argmax(below >= 0.025), np.argmax(below >= 0.975)  # 180 and 220; a 90% interval: 184 and 216
    _, got_low, got_high = metrics.median_interval(k.astype(float), n_boot=20_000)
    assert abs(got_low - low) <= 1 and abs(got_high - high) <= 1


def test_one_image_gives_a_point_interval_at_its_median_and_two_images_the_hand_counted_one():
    # Every resample of a single image is that image: the interval is its median, for an even count too.
    assert metrics.median_interval([1.0, 2.0], groups=[0, 0]) == (1.5, 1.5, 1.5)
    assert metrics.median_interval([1.0, 2.0, 4.0], groups=[0, 0, 0]) == (2.0, 2.0, 2.0)
    # Images {1, 2} and {3, 10}: a resample is image 0 twice (median 1.5) or image 1 twice (6.5), each with
    # probability 1/4, or both (2.5, the median of the whole set).
    assert metrics.median_interval([1.0, 2.0, 3.0, 10.0], groups=[0, 0, 1, 1]) == (2.5, 1.5, 6.5)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 10, 11, 40])
def test_the_interval_brackets_the_median_for_even_and_odd_counts_at_every_seed(n):
    for seed in range(100):
        rng = np.random.default_rng(seed)
        values = np.round(rng.normal(size=n), 1)  # ties, as the rise widths of sharp edges have
        values[rng.random(n) < 0.2] = math.inf  # rises that never complete
        groups = rng.integers(0, rng.integers(1, n + 1), size=n)  # one image up to one per value
        median, low, high = metrics.median_interval(values, groups, seed=seed)
        assert median == np.median(values) and low <= median <= high, (seed, values, groups)


def test_undefined_values_are_left_out_and_inf_counts_as_largest():
    assert metrics.median_interval([1.0, 2.0, math.nan, 3.0])[0] == 2.0
    assert metrics.median_interval([1.0, math.inf, math.inf])[0] == math.inf


def test_psnr_and_ssim_take_the_truth_s_value_range_not_the_output_s():
    truth = np.zeros((16, 16))
    truth[:, 8:] = 2.0  # range 2
    output = 0.9 * truth + 0.1  # range 1.8, every pixel 0.1 off: MSE 0.01
    assert metrics.psnr(output, truth) == pytest.approx(10 * math.log10(2.0**2 / 0.01))
    assert metrics.ssim(output, truth) == metrics.ssim(output, truth, data_range=2.0)


def test_the_set_summary_resamples_whole_images():
    """Three images whose edges are all alike within each: a ratio of 1, 1/2 and 1/4 (a step, a ramp of 2 and of 4
    steps). Resampling images, a resample is all third image with probability 1/27 and has at least two of
    them with 7/27, so the 95% interval runs from 1/4 to 1; resampling the 96 edges one by one, the median
    would be 1/2 in nearly every resample."""
    truth = np.zeros((32, 32))
    truth[:, 16:] = 1.0  # one edge per row
    outputs = [sum(np.roll(truth, shift, axis=1) for shift in range(steps)) / steps for steps in (1, 2, 4)]
    row = metrics.set_summary(np.stack(outputs), np.stack([truth] * 3), 1)
    assert row["n_edges"] == 96
    assert (row["jump_ratio"], row["jump_ratio_low"], row["jump_ratio_high"]) == pytest.approx((0.5, 0.25, 1.0))
    assert (row["rise_width_px"], row["rise_width_px_low"], row["rise_width_px_high"]) == pytest.approx((1.6, 0.8, 3.2))


@pytest.mark.parametrize("s", [1, 2, 3])
def test_the_interior_leaves_out_3s_pixels_on_every_side(s):
    image = np.zeros((2, 32 * s, 32 * s))
    image[:, 3 * s : -3 * s, 3 * s : -3 * s] = 1.0
    inner = metrics.interior(image, s)
    assert inner.shape == (2, 32 * s - 6 * s, 32 * s - 6 * s) and np.all(inner == 1.0)
