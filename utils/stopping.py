"""Stopping a long run cleanly: SIGINT (Ctrl-C) or SIGTERM (a cluster's time limit) ends it after the current
step, so its state can be saved and a rerun resumes; a second signal stops at once."""

import signal
import sys
from contextlib import contextmanager


class Stop:
    """signum is set by the first SIGINT/SIGTERM; the run checks it after every step."""

    def __init__(self, announce=True):
        self.signum, self.announce = 0, announce

    def handle(self, signum, frame):
        if self.signum:  # a second signal: stop at once (checkpoints are written atomically)
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            print(
                f"\n{signal.Signals(signum).name}: stopping after this step and saving (again to abort)",
                file=sys.stderr,
            )


@contextmanager
def stop_on_signals(announce=True):
    """Within the block, SIGINT and SIGTERM set the yielded Stop's signum instead of ending the process."""
    stop = Stop(announce)
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
