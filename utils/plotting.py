"""Figures of evaluate_unet.py: the paper's comparison figures, single images and cuts, regularity.png.

Images are drawn over the physical square [0, 1]^2 and cuts against the physical position of
each pixel's centre, so images at different resolutions line up.
"""

import math

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import GROUND_TRUTH  # noqa: E402

CUT_STYLE = dict(marker=".", linestyle="none", markersize=2, color="tab:blue")  # the paper plots cuts as dots


def value_range(images):
    """(low, high) over all images, widened by 5% so the extreme dots of a cut stay inside the axes."""
    low = min(float(np.min(image)) for image in images)
    high = max(float(np.max(image)) for image in images)
    margin = 0.05 * (high - low) or 0.05
    return low - margin, high + margin


def comparison_figure(path, columns, title, caption, row_labels=None):
    """Per sample an image row (cut row marked in red) and below it the cut as dots, on one y-range a sample.

    columns: (label, images (n, H, W), cut rows (n,)) each; H may differ between columns.
    row_labels: one label per image row (default: sample 0, sample 1, ...).
    """
    n_samples, n_columns = len(columns[0][1]), len(columns)
    fig, axes = plt.subplots(2 * n_samples, n_columns, figsize=(0.6 + 1.9 * n_columns, 2.9 * n_samples),
                             gridspec_kw=dict(height_ratios=[1.7, 0.8] * n_samples), squeeze=False)
    for i in range(n_samples):
        low, high = value_range([images[i] for _, images, _ in columns])
        for c, (label, images, rows) in enumerate(columns):
            image, row = images[i], rows[i]
            size = image.shape[-1]
            ax = axes[2 * i, c]
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, extent=(0, 1, 1, 0), interpolation="nearest")
            ax.axhline((row + 0.5) / size, color="red", linewidth=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=9)
            if c == 0:
                ax.set_ylabel(row_labels[i] if row_labels else f"sample {i}", fontsize=9)
            cut = axes[2 * i + 1, c]
            cut.plot((np.arange(size) + 0.5) / size, image[row], **CUT_STYLE)
            cut.set_xlim(0, 1)
            cut.set_ylim(low, high)
            cut.tick_params(labelsize=6)
            if c:
                cut.set_yticklabels([])
    _save(fig, path, title, caption, left=0.55, right=0.1, bottom=0.35, wspace=0.12, hspace=0.3)


def save_image(path, image, low, high):
    """One image as a PNG, one pixel per pixel, grey scale from low to high."""
    plt.imsave(path, image, cmap="gray", vmin=low, vmax=high)


def save_cuts(cuts):
    """Each cut as a PNG: its values as dots against the physical position. cuts: (path, values, low, high, title).

    One figure is redrawn for all of them: a new figure per cut made the many small files slow.
    """
    fig, ax = plt.subplots(figsize=(4, 2.4))
    fig.subplots_adjust(left=0.15, right=0.97, top=0.88, bottom=0.2)
    (dots,) = ax.plot([], [], **CUT_STYLE)
    ax.set_xlim(0, 1)
    ax.set_xlabel("position along the row")
    for path, values, low, high, title in cuts:
        size = len(values)
        dots.set_data((np.arange(size) + 0.5) / size, values)
        ax.set_ylim(low, high)
        ax.set_title(title, fontsize=9)
        fig.savefig(path, dpi=100)
    plt.close(fig)


def regularity_figure(path, rows, title, caption):
    """Median rise width and jump ratio against s (per reg) and against reg (at s = 1), ground truth dashed.

    rows: metrics.csv's rows as dicts, the reference rows with reg GROUND_TRUTH. A point is the
    median over the samples of each image's median; an infinite one (the rise does not complete
    anywhere in the row) is left out and the panel says so.
    """
    measures = [("rise_width_px", "median rise width 10-90% (pixels)"), ("jump_ratio", "median jump ratio")]

    def median(key, scaling, reg):
        values = [r[key] for r in rows if r["scaling"] == scaling and r["reg"] == reg]
        return float(np.median(values)) if values else math.nan

    scalings = sorted({r["scaling"] for r in rows})
    regs = sorted({r["reg"] for r in rows if r["reg"] != GROUND_TRUTH})
    regs_s1 = sorted({r["reg"] for r in rows if r["reg"] != GROUND_TRUTH and r["scaling"] == 1})
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    for m, (key, label) in enumerate(measures):
        top, bottom = axes[0, m], axes[1, m]
        curves = [(top, scalings, [median(key, s, reg) for s in scalings], f"reg = {reg:g}") for reg in regs]
        curves += [(bottom, range(len(regs_s1)), [median(key, 1, reg) for reg in regs_s1], "U-net, s = 1")]
        for ax, x, y, curve_label in curves:
            y = np.array(y)
            ax.plot(x, np.where(np.isinf(y), np.nan, y), marker="o", label=curve_label)
            if np.isinf(y).any():
                ax.text(0.02, 0.02, "some points missing: the rise never completes in the row",
                        transform=ax.transAxes, fontsize=7, color="gray")
        top.plot(scalings, [median(key, s, GROUND_TRUTH) for s in scalings], "k--", label="ground truth")
        bottom.axhline(median(key, 1, GROUND_TRUTH), color="k", linestyle="--", label="ground truth")
        top.set_xticks(scalings)
        top.set_xlabel("resolution factor s")
        bottom.set_xticks(range(len(regs_s1)), [f"{reg:g}" for reg in regs_s1])
        bottom.set_xlabel("weight decay reg (s = 1)")
        for ax in (top, bottom):
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.legend(fontsize=7)
    _save(fig, path, title, caption, left=0.8, right=0.2, bottom=0.5, wspace=0.3, hspace=0.35)


def training_figure(path, logs, title, caption):
    """Test loss and the test set's median jump ratio against epochs, one line per model.

    logs: {label: rows of the trainer's CSV log as dicts}; shows whether the sharpness differences
    between models persist as training converges.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, rows in logs.items():
        epochs = [int(r["epoch"]) for r in rows]
        axes[0].plot(epochs, [float(r["test_loss"]) for r in rows], marker=".", label=label)
        axes[1].plot(epochs, [float(r["jump_ratio"]) for r in rows], marker=".", label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("test loss (MSE)")
    axes[1].set_ylabel("median jump ratio, test set")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    _save(fig, path, title, caption, left=0.8, right=0.2, bottom=0.5, wspace=0.3)


def psnr_figure(path, panels, title, caption):
    """PSNR against iteration, one panel per weight decay and one line per s, the best and final iterations marked.

    panels: {panel title: {line label: (psnr per iteration (T,), best iteration (1-based), reference PSNR
    of the noisy input)}}. Shows where a deep image prior starts to fit the noise.
    """
    width = max(9.0, 0.6 + 4.2 * len(panels))  # at least the width of the caption's lines
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.6), squeeze=False, sharey=True)
    for ax, (panel, lines) in zip(axes[0], panels.items()):
        for c, (label, (psnr, best, noisy)) in enumerate(lines.items()):
            color = f"C{c}"
            iterations = np.arange(1, len(psnr) + 1)
            ax.plot(iterations, psnr, color=color, linewidth=1, label=label)
            ax.plot(best, psnr[best - 1], "o", color=color, markersize=5)
            ax.plot(len(psnr), psnr[-1], "x", color=color, markersize=6)
            ax.axhline(noisy, color=color, linestyle=":", linewidth=0.8)
        ax.plot([], [], "ko", markersize=5, label="best PSNR")
        ax.plot([], [], "kx", markersize=6, label="final iteration")
        ax.plot([], [], "k:", linewidth=0.8, label="noisy input")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7, loc="lower right")
    axes[0, 0].set_ylabel("PSNR against the ground truth (dB)")
    _save(fig, path, title, caption, left=0.7, right=0.2, bottom=0.5, wspace=0.08)


def _save(fig, path, title, caption, left, right, bottom, **spacing):
    """Title on top, the caption (which weights made the figure) in small print below, margins in inches, save.

    Fixed margins instead of tight_layout, which took seconds on the 50 axes of a comparison figure.
    """
    width, height = fig.get_size_inches()
    caption_height = (caption.count("\n") + 1) * 0.11  # inches: 6 pt lines
    fig.set_figheight(height + caption_height + 0.9)
    height = fig.get_figheight()
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - 0.55 / height,
                        bottom=(caption_height + bottom) / height, **spacing)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    fig.text(0.01, 0.05 / height, caption, fontsize=6, va="bottom", ha="left", family="monospace")
    fig.savefig(path, dpi=100)
    plt.close(fig)
