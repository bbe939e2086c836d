"""Progress bars on a terminal only: in a log file (a cluster job's output) they would add a line per redraw."""

import sys

from tqdm import tqdm


def on_terminal():
    return sys.stderr.isatty()


def progress(**kwargs):
    """tqdm, switched off where stderr is not a terminal; the caller prints its own line per epoch or file."""
    return tqdm(disable=kwargs.pop("disable", False) or not on_terminal(), dynamic_ncols=True, **kwargs)
