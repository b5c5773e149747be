"""Carry an evaluation folder's cases across the fourteenth session's cache-key change (d254980).

Until then an arm's cache key held only its adaptation mode and loss; since then it holds its whole online recipe,
so cases computed before are not found any more and a re-run recomputes them. When the arm's sidecar has not
changed since (check it!), the old case is the same computation: this copies each old case (and its stop image) to
the name the current key gives it, with the key and file fields updated. Checked on inpaint-offset before use: the
recomputed astronaut 128 px random case matched the old one value for value (10,000 PSNRs), only its timings
differed. Never use it on a folder whose init's online recipe was edited after its cases were made.

    python pretrain/experiments/rekey_cases.py evaluate/suites/inpaint-offset.toml runs/inpaint-offset
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from metadip.evaluation.arms import resolve_arms
from metadip.evaluation.problems import (
    LEVER_DEFAULTS,
    _short_hash,
    arm_key,
    arm_key_fields,
    plan,
    problem_arms,
    run_mode,
)
from metadip.evaluation.runner import _case_name
from metadip.evaluation.suite import load_suite
from metadip.fileio import atomic_write_json


def old_key(problem, arm, stop: str, bands: int, mode: dict) -> str:
    """The key before d254980: the recipe's adapt / loss only, and only when away from their defaults."""
    levers = {k: arm.inner[k] for k, default in LEVER_DEFAULTS.items() if arm.inner.get(k, default) != default}
    return _short_hash({**arm_key_fields(problem, arm, stop, bands, mode), **({"levers": levers} if levers else {})})


def main(suite: str, folder: str) -> int:
    config = load_suite(suite)
    out = Path(folder)
    arms, _ = resolve_arms(config)
    mode = run_mode(config)
    moved = 0
    for problem in plan(config, arms):
        for arm in problem_arms(problem, arms):
            new, old = (
                arm_key(problem, arm, config.stop, config.bands, mode),
                old_key(problem, arm, config.stop, config.bands, mode),
            )
            new_name, old_name = _case_name(problem, arm.label, new), _case_name(problem, arm.label, old)
            source, target = out / "cases" / f"{old_name}.json", out / "cases" / f"{new_name}.json"
            if new == old or target.is_file() or not source.is_file():
                continue
            record = json.loads(source.read_text(encoding="utf-8"))
            if record.get("key") != old:
                continue
            old_png, new_png = out / f"images/{old_name}_stop.png", out / f"images/{new_name}_stop.png"
            if not old_png.is_file():
                continue
            shutil.copy(old_png, new_png)
            record["key"] = new
            record["files"] = {**record.get("files", {}), "stop": f"images/{new_name}_stop.png"}
            atomic_write_json(target, record)
            moved += 1
            print(f"{old_name} -> {new}")
    print(f"{moved} case(s) re-keyed")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
