"""Control for log entry 68: run an evaluation suite with the random arm's output EMA changed (the DIP paper's
recipe has 0.99), so a speedup bought by a meta init's shorter EMA can be told from one bought by its θ0.

The random arm is ``metadip.checkpoint.random_init``'s recipe (``PAPER``); this script swaps in
``PAPER.replace(ema=EMA)`` there and in the arm's identity (so its cached cases get their own key), then runs
``metadip evaluate`` with the remaining arguments. Copy the meta arm's and the problems' cases into ``--out``
first to reuse them.

    OMP_NUM_THREADS=1 python pretrain/experiments/random_ema_suite.py 0.9 \\
        --config evaluate/suites/phantom-reptile.toml --init runs/ema09/phantom-fourier-reptile.json \\
        --out runs/phantom-ema-random09 --jobs 1 --threads 1

(The suite ``phantom-reptile`` and its init were retired in the seventeenth session:
``git show 3ead7bf:evaluate/suites/phantom-reptile.toml``.)
"""

from __future__ import annotations

import sys

from metadip import checkpoint
from metadip.cli import main
from metadip.evaluation import arms
from metadip.online import PAPER

if __name__ == "__main__":
    recipe = PAPER.replace(ema=float(sys.argv[1]))
    checkpoint.PAPER = recipe
    arms.PAPER = recipe
    sys.exit(main(["evaluate", *sys.argv[2:]]))
