"""How stable the DIP fits of a run folder were: per fit, the fastest fall of the output's PSNR below its running
best within 50 iterations (after iteration 200, when the fit has left the noise level behind: reg 0 fits fall
about 0.1 dB per 50 iterations once they fit the noise) and the deepest fall below it.

    python benchmarks/trials/dip_falls.py [output dir, default data/results/dip/quick]
"""

import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

WINDOW, AFTER = 50, 200


def falls(psnrs):
    """(fastest fall within WINDOW iterations after AFTER, deepest fall) below the running best, in dB."""
    below = np.maximum.accumulate(psnrs) - psnrs
    fastest = max((below[i] - below[i - WINDOW] for i in range(AFTER + WINDOW, len(psnrs))), default=0.0)
    return fastest, below.max()


def main(folder):
    table = defaultdict(list)  # (s, reg) -> (seed, iterations, fastest, deepest)
    for path in sorted(Path(folder, "fits").glob("scaling_*.csv")):
        s, reg, seed = re.fullmatch(r"scaling_(\d+)_reg_(.+?)(?:_seed_(\d+))?\.csv", path.name).groups()
        with open(path, newline="") as file:
            psnrs = np.array([float(row["psnr"]) for row in csv.DictReader(file)])
        table[int(s), float(reg)].append((int(seed or 0), len(psnrs), *falls(psnrs)))
    print(f"{folder}: per seed, fastest fall in {WINDOW} iterations after {AFTER} / deepest fall below the "
          "running best")
    for (s, reg), fits in sorted(table.items()):
        cells = ", ".join(f"seed {seed} ({n} it) {fast:.2f} / {deep:.2f}" for seed, n, fast, deep in sorted(fits))
        print(f"s = {s}, reg {reg:g}: {cells} dB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/results/dip/quick")
