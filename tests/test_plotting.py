"""The figures' layout, read off the drawn figure: every caption line and label inside it, whole epochs on a short
run's axis, the note on missing medians off the data."""

import math

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text

from utils import plotting

CLOSE = plt.close


@pytest.fixture
def kept(monkeypatch):
    """The figures the plotting functions save, kept open for a look instead of closed."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    yield figures
    for fig in figures:
        CLOSE(fig)


def inside(fig, text):
    """Whether a drawn text lies within the figure, left to right and bottom to top."""
    box, frame = text.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_a_long_caption_line_is_wrapped_inside_the_figure(tmp_path, kept):
    line = "data: the seeded circles data set; " + "showcase: test samples 597, 1675, 982, 545, 1923; " * 6
    plotting._save(plt.figure(figsize=(6, 3)), tmp_path / "f.png", "title", f"weights: folder w\n{line}", left=0.5,
                   right=0.2, bottom=0.5)
    fig = kept[0]
    caption = fig.texts[-1]
    assert len(caption.get_text().splitlines()) > 2 and inside(fig, caption)
    assert caption.get_text().replace("\n    ", " ").endswith(line.strip())  # every word kept, in order


def test_a_two_epoch_run_has_whole_epochs_and_every_label_inside(tmp_path, kept):
    rows = [dict(epoch=e, test_loss=loss, jump_ratio=0.1 * e, rise_width_px=math.inf, weight_norm2=130 + e)
            for e, loss in ((1, 1.93), (2, 0.61))]
    plotting.training_figure(tmp_path / "t.png", {"s = 1, reg = 0": (rows, 32)}, "title", "caption")
    fig = kept[0]
    fig.canvas.draw()
    for ax in fig.axes:
        assert inside(fig, ax.yaxis.label)
        low, high = ax.get_xlim()
        assert [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high] == ["1", "2"]
    assert fig.axes[2].get_title(loc="left") == "no points: every median is infinite or undefined"


def test_the_note_on_missing_medians_stands_above_the_axes(kept):
    fig, ax = plt.subplots()
    finite, infinite = ({"w": w, "w_low": w, "w_high": w} for w in (0.05, math.inf))
    plotting._interval_line(ax, [(1, finite), (2, infinite)], "w", "reg = 0", {})
    fig.canvas.draw()
    words = "some medians missing: the rise never completes in the row"
    (note,) = ax.findobj(lambda artist: isinstance(artist, Text) and artist.get_text() == words)
    assert note.get_window_extent().y0 >= ax.get_window_extent().y1  # above the axes, where no line runs
    CLOSE(fig)


def test_a_summary_with_zoom_starts_draws_both_starts_at_their_own_values(tmp_path, kept):
    def row(s, reg, init, width):
        values = dict(jump_ratio=1 / width, rise_width_px=width * s, rise_width_phys=width, psnr_interior=20 + width)
        return dict(scaling=s, reg=reg, init=init, **values, **{f"{k}_{end}": v for k, v in values.items()
                                                                 for end in ("low", "high")})
    summary = [row(1, 0.0, "scratch", 1.0), row(2, 0.0, "scratch", 2.0), row(2, 0.0, "zoom", 3.0),
               row(3, 0.0, "scratch", 4.0), row(3, 0.0, "zoom", 5.0)]
    plotting.regularity_figure(tmp_path / "r.png", summary, "title", "caption")
    widths = kept[0].axes[2]  # rise width in image widths against s
    drawn = {bars.get_label(): list(bars.lines[0].get_ydata()) for bars in widths.containers}
    assert drawn == {"reg = 0, scratch start": [1.0, 2.0, 4.0], "reg = 0, zoom start": [3.0, 5.0]}
