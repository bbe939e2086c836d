"""How stable the DIP fits of a run folder were: per fit, the fastest fall of the output's PSNR below its running
best within 50 iterations (after iteration 200, when the fit has left the noise level behind: reg 0 fits fall
about 0.1 dB per 50 iterations once they fit the noise) and the deepest fall below it.

    python benchmarks/trials/dip_falls.py [output dir, default data/results/dip/quick]
"""

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from dip_weight_decay_trial import fastest_fall  # this folder's: the measure of the lr 0.001 choice

WINDOW, AFTER = 50, 200


def main(folder):
    table = defaultdict(list)  # (s, reg) -> (seed, iterations, fastest, deepest)
    for config in sorted(Path(folder, "fits").glob("*.json")):  # a fit's config (fit_config) beside its curve
        fit = json.loads(config.read_text())
        with open(config.with_suffix(".csv"), newline="") as file:
            psnrs = np.array([float(row["psnr"]) for row in csv.DictReader(file)])
        deepest = (np.maximum.accumulate(psnrs) - psnrs).max()
        table[fit["scaling"], fit["reg"]].append((fit["seed"], len(psnrs), fastest_fall(psnrs, WINDOW, AFTER), deepest))
    print(f"{folder}: per seed, fastest fall in {WINDOW} iterations after {AFTER} / deepest fall below the "
          "running best")
    for (s, reg), fits in sorted(table.items()):
        cells = ", ".join(f"seed {seed} ({n} it) {fast:.2f} / {deep:.2f}" for seed, n, fast, deep in sorted(fits))
        print(f"s = {s}, reg {reg:g}: {cells} dB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/results/dip/quick")
