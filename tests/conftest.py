"""Tests run from the repository root's modules on 2 CPU threads."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)

# For scripts run as subprocesses: one thread, as in the tests' own process (one_thread).
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def one_thread():
    """One thread for a module's tiny training runs: on a busy 2-core machine two spinning threads make a tiny
    step far slower, and a run in this process and one in a subprocess must use the same thread count to be
    bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stop_at(cmd, marker, signum=signal.SIGTERM):
    """Run a script as a user does and send it signum at the first line of output holding marker; returns what it
    printed after that line and its exit status."""
    run = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in run.stdout:
        if marker in line:
            run.send_signal(signum)
            break
    return run.stdout.read(), run.wait(timeout=60)
