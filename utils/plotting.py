"""Figures of evaluate_unet.py: the paper's comparison figures, single images and cuts, regularity.png, training.png.

Images are drawn over the physical square [0, 1]^2 and cuts against the physical position of
each pixel's centre, so images at different resolutions line up.
"""

import textwrap

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .metrics import GROUND_TRUTH, NOISY_INPUT  # noqa: E402

CAPTION_CHAR = 0.6 * 6 / 72  # inches: the width of a character of the 6 pt monospace caption (0.6 em)
CUT_STYLE = dict(marker=".", linestyle="none", markersize=2, color="tab:blue")  # the paper plots cuts as dots
TRUTH_STYLE = dict(color="0.6", linewidth=0.8)  # the ground truth beneath a cut
FAINT_STYLE = dict(CUT_STYLE, color="tab:orange", alpha=0.35)  # further cuts beneath the main one (other seeds)


def value_range(images):
    """(low, high) over all images, widened by 5% so the extreme dots of a cut stay inside the axes."""
    low = min(float(np.min(image)) for image in images)
    high = max(float(np.max(image)) for image in images)
    margin = 0.05 * (high - low) or 0.05
    return low - margin, high + margin


def comparison_figure(path, columns, title, caption, row_labels=None):
    """Per sample an image row (cut row marked in red) and below it the cut as dots, on one y-range a sample.

    columns: (label, images (n, H, W), cut rows (n,), truths (n, H, W) or None) each; H may differ between
    columns. Beneath each column's dots its own ground truth along the same row is drawn as a grey line, so a
    cut that meets a plateau of the finer truth is not mistaken for a network effect. A fifth entry, per sample a
    list of further images of the column's size (e.g. other seeds' outputs), adds their cuts as faint dots.
    row_labels: one label per image row (default: sample 0, sample 1, ...).
    """
    n_samples, n_columns = len(columns[0][1]), len(columns)
    fig, axes = plt.subplots(2 * n_samples, n_columns, figsize=(0.8 + 1.9 * n_columns, 2.9 * n_samples),
                             gridspec_kw=dict(height_ratios=[1.7, 0.8] * n_samples), squeeze=False)
    for i in range(n_samples):
        faint = [column[4][i] if len(column) > 4 else [] for column in columns]
        low, high = value_range([column[1][i] for column in columns] + [image for group in faint for image in group])
        for c, (label, images, rows, truths, *_) in enumerate(columns):
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
            x = (np.arange(size) + 0.5) / size
            if truths is not None:
                cut.step(x, truths[i][row], where="mid", **TRUTH_STYLE)
            for other in faint[c]:
                cut.plot(x, other[row], **FAINT_STYLE)
            cut.plot(x, image[row], **CUT_STYLE)
            cut.set_xlim(0, 1)
            cut.set_ylim(low, high)
            cut.tick_params(labelsize=6)
            if c:
                cut.set_yticklabels([])
            else:
                cut.set_ylabel("value", fontsize=7)
            if i == n_samples - 1:
                cut.set_xlabel("position x along the red row", fontsize=7)
    caption = "cuts: dots, the values along the red row; grey line, the ground truth along the same row\n" + caption
    _save(fig, path, title, caption, left=0.7, right=0.1, bottom=0.75, wspace=0.12, hspace=0.3)


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


REFERENCES = {GROUND_TRUTH: ("ground truth", dict(color="k", linestyle="--")),
              NOISY_INPUT: ("noisy input", dict(color="0.5", linestyle=":"))}


def regularity_figure(path, summary, title, caption):
    """Medians with their 95% intervals (metrics_summary.csv's rows) against s and, at s = 1, against reg.

    Top: jump ratio, rise width in pixels and in units of the image width against s, a line per reg and, where
    the summary has both, per start (scratch solid, zoom dash-dotted, one colour per reg).
    Bottom, at s = 1: jump ratio, physical rise width and interior PSNR against reg. The ground truth and
    the noisy input are drawn as references; an infinite median (the rise never completes in the row)
    is left out and the panel says so; the legends list only what has points.
    """
    top = [("jump_ratio", "jump ratio"), ("rise_width_px", "rise width 10-90% (pixels)"),
           ("rise_width_phys", "rise width 10-90% (image widths)")]
    bottom = [("jump_ratio", "jump ratio"), ("rise_width_phys", "rise width 10-90% (image widths)"),
              ("psnr_interior", "PSNR, interior (dB)")]
    scalings = sorted({r["scaling"] for r in summary})
    lines = sorted({(r["reg"], r.get("init") or "") for r in summary if r["reg"] not in REFERENCES})
    regs = sorted({reg for reg, _ in lines})
    several_inits = len({init for _, init in lines}) > 1
    regs_s1 = sorted({r["reg"] for r in summary if r["reg"] not in REFERENCES and r["scaling"] == 1})
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (key, label) in zip(axes[0], top, strict=True):
        for reg, init in lines:
            name = f"reg = {reg:g}" + (f", {init} start" if several_inits else "")
            style = dict(marker="o", color=f"C{regs.index(reg)}", linestyle="-." if init == "zoom" else "-")
            _interval_line(ax, [(s, _row(summary, s, reg, init)) for s in scalings], key, name, style)
        for ref, (name, style) in REFERENCES.items():
            _interval_line(ax, [(s, _row(summary, s, ref)) for s in scalings], key, name, dict(style, marker="."))
        ax.set_xticks(scalings)
        ax.set_xlabel("resolution factor s")
        _finish(ax, label)
    positions = range(len(regs_s1))
    for ax, (key, label) in zip(axes[1], bottom, strict=True):
        _interval_line(ax, [(x, _row(summary, 1, reg)) for x, reg in zip(positions, regs_s1, strict=True)], key,
                       "U-net, s = 1", dict(marker="o"))
        for ref, (name, style) in REFERENCES.items():
            value = _row(summary, 1, ref)
            if value and np.isfinite(value[key]):
                ax.axhline(value[key], label=name, **style)
        ax.set_xticks(list(positions), [f"{reg:g}" for reg in regs_s1])
        ax.set_xlabel("weight decay reg (s = 1)")
        _finish(ax, label)
    _save(fig, path, title, caption, left=0.8, right=0.2, bottom=0.55, wspace=0.32, hspace=0.38)


def _row(summary, scaling, reg, init=None):
    """The summary row of (s, reg) and, where given, init ("scratch" or "zoom"; a reference row has none)."""
    return next((r for r in summary if r["scaling"] == scaling and r["reg"] == reg
                 and (init is None or (r.get("init") or "") == init)), None)


def _interval_line(ax, points, key, label, style):
    """A line through the medians with their intervals as error bars; nothing (and no legend entry) without points."""
    points = [(x, row) for x, row in points if row is not None]
    finite = [(x, row) for x, row in points if np.isfinite(row[key])]
    if len(finite) < len(points):  # said above the axes, where no line runs
        ax.set_title("some medians missing: the rise never completes in the row", fontsize=7, color="gray",
                     loc="left")
    if not finite:
        return
    x = [p for p, _ in finite]
    y = np.array([row[key] for _, row in finite])
    low = np.array([row[f"{key}_low"] for _, row in finite])
    high = np.array([row[f"{key}_high"] for _, row in finite])
    high = np.where(np.isfinite(high), high, y)  # an open interval: drawn to the median only
    ax.errorbar(x, y, yerr=[y - low, high - y], capsize=3, label=label, **style)


def _finish(ax, label):
    """The y label, a linear axis from 0, and a legend of what has points."""
    ax.set_ylabel(label)
    if ax.get_yscale() == "linear":
        ax.set_ylim(bottom=0)
        ax.ticklabel_format(axis="y", useOffset=False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def training_figure(path, logs, title, caption):
    """Per epoch, one line per model: test loss, the test set's median jump ratio and physical rise width, and
    the squared L2 norm of the weights (what weight decay acts on).

    logs: {label: (the trainer's CSV log rows as dicts, image width in pixels)}; shows whether the sharpness
    differences between models persist as training goes on.
    """
    panels = [("test_loss", "test loss (MSE)"), ("jump_ratio", "median jump ratio, test set"),
              ("rise_width_px", "median rise width, test set (image widths)"),
              ("weight_norm2", "squared L2 norm of the weights")]
    fig, axes = plt.subplots(1, len(panels), figsize=(17, 3.8), sharex=True)  # a panel without points too
    for label, (rows, size) in logs.items():
        epochs = [int(r["epoch"]) for r in rows]
        for ax, (key, _) in zip(axes, panels, strict=True):
            if key in rows[0]:  # logs of older runs lack weight_norm2
                scale = size if key == "rise_width_px" else 1
                ax.plot(epochs, [float(r[key]) / scale for r in rows], marker=".", label=label)
    for ax in axes:
        if not any(np.isfinite(line.get_ydata()).any() for line in ax.get_lines()):
            ax.set_title("no points: every median is infinite or undefined", fontsize=7, color="gray", loc="left")
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, 1)
    axes[3].set_yscale("log")
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))  # whole epochs, also for 2
        _finish(ax, label)
    # left: room for a log axis's widest labels (6 x 10^-1, as a short run's test loss has) and its y label
    _save(fig, path, title, caption, left=1.0, right=0.2, bottom=0.55, wspace=0.35)


def psnr_figure(path, panels, title, caption):
    """PSNR against iteration, one panel per weight decay and per s the seeds' curves as a band, their median as a
    line, each seed's best iteration (dot) and last iteration (cross) marked.

    panels: {panel title: {line label: (per seed the psnr per iteration (T_k,), per seed the best iteration
    (1-based), reference PSNR of the noisy input)}}; the curves may differ in length: at each iteration the band
    and the median cover the seeds whose fits reached it. Shows where a deep image prior starts to fit the noise.
    """
    width = max(9.0, 0.6 + 4.2 * len(panels))  # at least the width of the caption's lines
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.6), squeeze=False, sharey=True)
    for ax, (panel, lines) in zip(axes[0], panels.items(), strict=False):
        for c, (label, (curves, bests, noisy)) in enumerate(lines.items()):
            color = f"C{c}"
            longest = max(len(curve) for curve in curves)
            stacked = np.full((len(curves), longest), np.nan)
            for k, curve in enumerate(curves):
                stacked[k, : len(curve)] = curve
            iterations = np.arange(1, longest + 1)
            if len(curves) > 1:
                ax.fill_between(iterations, np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0), color=color,
                                alpha=0.25, linewidth=0)
            ax.plot(iterations, np.nanmedian(stacked, axis=0), color=color, linewidth=1,
                    label=f"{label}, median of {len(curves)} seeds" if len(curves) > 1 else label)
            for curve, best in zip(curves, bests, strict=True):
                ax.plot(best, curve[best - 1], "o", color=color, markersize=4)
                ax.plot(len(curve), curve[-1], "x", color=color, markersize=5)
            ax.axhline(noisy, color=color, linestyle=":", linewidth=0.8)
        ax.plot([], [], color="0.5", alpha=0.4, linewidth=6, label="range over the seeds")
        ax.plot([], [], "ko", markersize=4, label="best PSNR, per seed")
        ax.plot([], [], "kx", markersize=5, label="last iteration, per seed")
        ax.plot([], [], "k:", linewidth=0.8, label="noisy input")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7, loc="lower right")
    axes[0, 0].set_ylabel("PSNR against the ground truth (dB)")
    _save(fig, path, title, caption, left=0.7, right=0.2, bottom=0.5, wspace=0.08)


def _save(fig, path, title, caption, left, right, bottom, **spacing):
    """Title on top, the caption (which weights made the figure) in small print below, margins in inches, save.

    Fixed margins instead of tight_layout, which took seconds on the 50 axes of a comparison figure. Caption
    lines longer than the figure is wide are wrapped, the rest indented.
    """
    width, height = fig.get_size_inches()
    columns = int((0.98 * width - 0.05) / CAPTION_CHAR)
    caption = "\n".join(wrapped for line in caption.split("\n")
                         for wrapped in textwrap.wrap(line, columns, subsequent_indent="    ") or [""])
    caption_height = (caption.count("\n") + 1) * 0.11  # inches: 6 pt lines
    fig.set_figheight(height + caption_height + 0.9)
    height = fig.get_figheight()
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - 0.55 / height,
                        bottom=(caption_height + bottom) / height, **spacing)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    fig.text(0.01, 0.05 / height, caption, fontsize=6, va="bottom", ha="left", family="monospace")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def zoom_figure(path, rows, cuts, cut_rows, title, caption, samples=(0, 1)):
    """One s = 1 network zoomed to k: its cut rows over the physical position for every k (two showcase samples),
    and against k the jump ratio (log-log, with the 1/k law through k = 1) and the physical rise width, the
    networks trained at s = k as separate markers.

    rows: zoom.csv's rows (k, reg, source: zoomed / trained / a reference); cuts: (k, reg) -> showcase outputs
    (n, N, N) and (k, GROUND_TRUTH) -> the truths; cut_rows: k -> each sample's row.
    """
    ks = sorted({k for k, _ in cuts})
    regs = sorted({r["reg"] for r in rows if r["source"] == "zoomed"})
    shown = 1e-3 if 1e-3 in regs else regs[0]  # the reg whose cuts are drawn: the paper's resolution figure's
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(ks)))
    for ax, i in zip(axes[:2], samples, strict=True):
        finest = max(ks)
        truth = cuts[finest, GROUND_TRUTH][i][cut_rows[finest][i]]
        ax.step((np.arange(len(truth)) + 0.5) / len(truth), truth, where="mid", label=f"ground truth, k = {finest}",
                **TRUTH_STYLE)
        for k, colour in zip(ks, colours, strict=True):
            values = cuts[k, shown][i][cut_rows[k][i]]
            ax.plot((np.arange(len(values)) + 0.5) / len(values), values, color=colour, linewidth=1, label=f"k = {k}")
        ax.set_xlim(0, 1)
        ax.set_xlabel("position x along the cut row")
        ax.set_ylabel(f"sample {i}, reg = {shown:g}: value")
        ax.legend(fontsize=6, ncol=2)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    panels = ((axes[2], "jump_ratio", "jump ratio"), (axes[3], "rise_width_phys", "rise width (image widths)"))
    for ax, key, label in panels:
        for c, reg in enumerate(regs):
            _interval_line(ax, [(r["k"], r) for r in rows if r["source"] == "zoomed" and r["reg"] == reg], key,
                           f"zoomed, reg = {reg:g}", dict(marker="o", color=f"C{c}"))
            _interval_line(ax, [(r["k"], r) for r in rows if r["source"] == "trained" and r["reg"] == reg], key,
                           f"trained at s = k, reg = {reg:g}", dict(marker="s", linestyle="none", markersize=8,
                                                                    color=f"C{c}", markeredgecolor="k"))
        _interval_line(ax, [(r["k"], r) for r in rows if r["source"] == GROUND_TRUTH], key, "ground truth",
                       dict(REFERENCES[GROUND_TRUTH][1], marker="."))
        ax.set_xlabel("zoom factor k (resolution s = k)")
        _finish(ax, label)
    first = [r for r in rows if r["source"] == "zoomed" and r["reg"] == shown and r["k"] == min(ks)]
    if first and np.isfinite(first[0]["jump_ratio"]):
        k = np.array(ks, dtype=float)
        axes[2].plot(k, first[0]["jump_ratio"] * min(ks) / k, color="0.4", linestyle=":",
                     label=f"1/k law through k = {min(ks)}, reg = {shown:g}")
    axes[2].set_xticks(ks, [str(k) for k in ks])
    axes[2].minorticks_off()
    axes[2].legend(fontsize=6)
    axes[3].set_xticks(ks)
    _save(fig, path, title, caption, left=0.8, right=0.2, bottom=0.55, wspace=0.35)


def convergence_figure(path, curves, references, title, caption):
    """Per s (columns), against epoch: the test set's median jump ratio (top) and physical rise width (bottom),
    a line per (reg, init) with the seeds' range as a band. A zoom start's epoch 0 is the zoomed s = 1 network.

    curves: {(s, reg, init): [a seed's log rows (dicts) per seed]}; references: {(s, name): (jump ratio,
    physical rise width)} drawn as horizontal lines (the noisy input, the s = 1 networks).
    """
    scalings = sorted({key[0] for key in curves})
    regs = sorted({key[1] for key in curves})
    fig, axes = plt.subplots(2, len(scalings), figsize=(4.6 * len(scalings) + 0.6, 6.4), squeeze=False, sharex="col")
    panels = (("jump_ratio", "median jump ratio"), ("rise_width_phys", "median rise width (image widths)"))
    for col, s in enumerate(scalings):
        for (t, reg, init), seeds in sorted(curves.items()):
            if t != s:
                continue
            epochs = [int(r["epoch"]) for r in seeds[0]]
            for row, (key, _) in enumerate(panels):
                values = np.array([[_log_value(r, key) for r in rows[: len(epochs)]] for rows in seeds])
                style = dict(color=f"C{regs.index(reg)}", linestyle="--" if init == "zoom" else "-")
                axes[row, col].plot(epochs, np.median(values, axis=0), marker=".", label=f"reg = {reg:g}, {init}",
                                    **style)
                if len(seeds) > 1:
                    axes[row, col].fill_between(epochs, values.min(axis=0), values.max(axis=0), alpha=0.15,
                                                color=style["color"], linewidth=0)
        for (t, name), values in references.items():
            if t == s:
                for row, value in enumerate(values):
                    axes[row, col].axhline(value, color="0.4", linestyle=":" if "noisy" in name else "-.",
                                           linewidth=0.9, label=name)
        axes[0, col].set_title(f"s = {s}", fontsize=10)
        axes[1, col].set_xlabel("epoch")
        axes[1, col].set_yscale("log")  # single epochs where most edges barely rise would flatten the rest
        axes[1, col].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        for row, (_, label) in enumerate(panels):
            _finish(axes[row, col], label if col == 0 else "")
        axes[0, col].set_ylim(0, 1.05)
    _save(fig, path, title, caption, left=0.8, right=0.2, bottom=0.55, wspace=0.25, hspace=0.12)


def _log_value(row, key):
    """A log row's value; the physical rise width is the logged pixel width over the image width (row["size"])."""
    if key == "rise_width_phys":
        return float(row["rise_width_px"]) / row["size"]
    return float(row[key])
