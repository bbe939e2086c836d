"""The circle data: rasteriser against hand-counted pixels and a literal per-pixel reference, sampler, CSV."""

import math

import numpy as np
import pytest
import torch

from utils.circles import (
    CirclesFileError,
    load_circles_csv,
    noisy_pairs,
    rasterise,
    sample_circles,
    save_circles_csv,
    split,
)

OFF = [2.0, 2.0, -1.0, 0.0]  # a circle that paints nothing (floored radius < 0), as padding


def one_image(circles, size):
    params = torch.tensor([circles + [OFF] * (5 - len(circles))], dtype=torch.float64)
    return rasterise(params, size)[0, 0]


def reference_image(circles, size):
    """The authors' rule (docs/paper.md), pixel by pixel, in plain Python: an independent reference."""
    image = np.zeros((size, size), dtype=np.float32)
    for cx, cy, r, intensity in circles:
        for y in range(size):
            for x in range(size):
                if math.sqrt((x - math.floor(cx * size)) ** 2 + (y - math.floor(cy * size)) ** 2) <= math.floor(
                    r * size
                ):
                    image[y, x] += np.float32(intensity)
    return image


def test_centred_circle_paints_the_13_lattice_points_of_radius_2():
    image = one_image([[0.5, 0.5, 0.25, 0.7]], 8)  # centre (4, 4), floor(0.25 * 8) = 2
    ys, xs = torch.nonzero(image, as_tuple=True)
    expected = {(y, x) for y in range(8) for x in range(8) if (x - 4) ** 2 + (y - 4) ** 2 <= 4}
    assert len(expected) == 13
    assert set(zip(ys.tolist(), xs.tolist(), strict=True)) == expected
    assert torch.all(image[ys, xs] == torch.tensor(0.7, dtype=torch.float32))


def test_negative_radius_paints_nothing_and_radius_zero_one_pixel():
    assert one_image([[0.5, 0.5, -0.01, 1.0]], 16).abs().sum() == 0  # floor(-0.16) = -1
    image = one_image([[0.5, 0.5, 0.01, 1.0]], 16)  # floor(0.16) = 0: the centre alone
    assert torch.nonzero(image).tolist() == [[8, 8]]


def test_overlapping_circles_add_up():
    # Centres (2, 4) and (5, 4) at N = 8, radius 2 each: overlap where both distances <= 2.
    image = one_image([[0.25, 0.5, 0.25, 0.5], [0.625, 0.5, 0.25, 0.25]], 8)
    for y in range(8):
        for x in range(8):
            value = 0.5 * ((x - 2) ** 2 + (y - 4) ** 2 <= 4) + 0.25 * ((x - 5) ** 2 + (y - 4) ** 2 <= 4)
            assert image[y, x].item() == pytest.approx(value, abs=0), (y, x)
    assert torch.nonzero(image == 0.75).tolist() == [[4, 3], [4, 4]]  # the lens, counted by hand


def test_same_circle_at_scalings_1_2_3_covers_the_gauss_circle_counts():
    # r = 0.25 at N = 16 s: floored radii 4, 8, 12; lattice points in those disks: 49, 197, 441.
    counts = [int((one_image([[0.5, 0.5, 0.25, 1.0]], 16 * s) > 0).sum()) for s in (1, 2, 3)]
    assert counts == [49, 197, 441]


def test_rasteriser_matches_the_per_pixel_reference_bit_for_bit():
    params = sample_circles(6, seed=3)
    for size in (16, 24):
        images = rasterise(torch.from_numpy(params), size)
        for i in range(len(params)):
            np.testing.assert_array_equal(images[i, 0].numpy(), reference_image(params[i].tolist(), size))


def test_circles_outside_the_image_and_floors_of_negative_centres():
    # Centre floor(-0.01 * 10) = -1: only column 0 is within radius 1 of (-1, 5), at row 5.
    image = one_image([[-0.01, 0.5, 0.1, 1.0]], 10)
    assert torch.nonzero(image).tolist() == [[5, 0]]


def test_sampler_statistics_determinism_and_split():
    params = sample_circles(10_000, seed=0)
    assert params.shape == (10_000, 5, 4) and params.dtype == np.float64
    assert abs(params.mean() - 0.5) < 0.005 and abs(params.std() - 0.5) < 0.005
    assert (params[..., 2] < 0).mean() == pytest.approx(0.1587, abs=0.005)  # P(N(0.5, 0.25) < 0)
    np.testing.assert_array_equal(params, sample_circles(10_000, seed=0))
    assert not np.array_equal(params, sample_circles(10_000, seed=1))
    train, test = split(params)
    assert len(train) == 8000 and len(test) == 2000
    np.testing.assert_array_equal(test[0], params[8000])


def test_noisy_pairs_have_the_papers_noise_level_and_are_seeded():
    params = torch.from_numpy(sample_circles(64, seed=1))
    noisy, clean = noisy_pairs(params, 32, torch.Generator().manual_seed(5))
    assert noisy.shape == clean.shape == (64, 1, 32, 32)
    assert (noisy - clean).std().item() == pytest.approx(0.07, rel=0.02)
    again, _ = noisy_pairs(params, 32, torch.Generator().manual_seed(5))
    assert torch.equal(noisy, again)


def test_csv_round_trip_is_exact(tmp_path):
    params = sample_circles(7, seed=2)
    save_circles_csv(tmp_path / "c.csv", params)
    np.testing.assert_array_equal(load_circles_csv(tmp_path / "c.csv"), params)
    assert len((tmp_path / "c.csv").read_text().splitlines()[0].split(",")) == 20


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("1,2,3\n", "row 1: 3 columns, expected 20"),
        (",".join(["0.5"] * 20) + "\n" + ",".join(["0.5"] * 19 + ["abc"]) + "\n", "row 2: 'abc' is not a number"),
        (",".join(["0.5"] * 19 + ["nan"]) + "\n", "row 1: contains a non-finite value"),
    ],
)
def test_malformed_csv_is_rejected_naming_file_and_problem(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(CirclesFileError) as err:
        load_circles_csv(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_csv_is_reported(tmp_path):
    with pytest.raises(CirclesFileError, match="cannot read circles file .*nope.csv"):
        load_circles_csv(tmp_path / "nope.csv")
