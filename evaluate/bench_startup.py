"""Start-up time of a tiny ``metadip reconstruct``: process start → first DIP iteration → exit, before and after.

    python evaluate/bench_startup.py                      # baseline: HEAD (the committed code) vs the working tree
    python evaluate/bench_startup.py --baseline ef3ac5e   # any commit as the baseline
    python evaluate/bench_startup.py --runs 3 --no-write  # a quick look, nothing written

The job is the one issue 18 timed: ``metadip simulate sample:astronaut --size 48 --operator denoise:sigma=25
--seed 0 --out y.png`` once, then ``metadip reconstruct y.png --iterations 3 --out x.png --no-progress``
(shipped init, chosen by ``--init auto``). Each code version runs from its own source tree on ``PYTHONPATH``
(the baseline is extracted with ``git archive``, which changes nothing in the repository) with the same
interpreter and packages, one thread (``OMP_NUM_THREADS=1``), one warm-up run each, then ``--runs`` rounds that
alternate the order of the two versions. Two kinds of run per round and version:

* **plain**: the ``metadip`` console script, timed from outside (process start to exit);
* **probed**: the same command run in-process by a small wrapper that notes the monotonic clock (shared by all
  processes on Linux) after ``import torch``, after ``import metadip.cli, metadip.api``, when ``dip.fit`` is
  entered and when its first iteration has finished (through ``fit``'s ``callback``), and at the end; and which
  modules were loaded (``torch._dynamo``, matplotlib, scipy, …).

Medians over the rounds are reported. Then an output check: a 50-iteration reconstruct of 48 px measurements
(shipped inits) by both versions must give the same PNG, pixel for pixel, and the same loss history, float for
float. Writes ``evaluate/results/startup.json`` and ``startup.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "evaluate" / "results"
SIZE = 48
TINY = ["--iterations", "3", "--no-progress"]
CHECK_OPERATORS = ("denoise:sigma=25", "inpaint:ratio=0.5", "deblur:kernel=gauss,width=1.5,sigma=2")
CHECK_ITERATIONS = 50
HEAVY = (
    "torch._dynamo",
    "sympy",
    "matplotlib",
    "scipy",
    "skimage",
    "tensorboard",
    "torch.utils.tensorboard",
    "tqdm",
)
#: Segments of a probed run, in order: (key, label, from mark, to mark).
SEGMENTS = (
    ("interpreter", "interpreter start", "launch", "start"),
    ("import_torch", "import torch", "start", "torch"),
    ("import_metadip", "import metadip (cli, api)", "torch", "metadip"),
    ("setup", "read y, load init, build net", "metadip", "fit"),
    ("first_iteration", "first iteration (incl. optimiser set-up)", "fit", "first_iteration"),
    ("rest", "iterations 2-3, write x.png", "first_iteration", "end"),
    ("exit", "interpreter exit", "end", "exit"),
)

PROBE = r"""
import json, sys, time
marks = {"start": time.monotonic()}
import torch
marks["torch"] = time.monotonic()
import metadip.cli, metadip.api
marks["metadip"] = time.monotonic()
import metadip.dip as _dip

_fit = _dip.fit


def fit(*args, callback=None, **kwargs):
    marks.setdefault("fit", time.monotonic())

    def first(iteration, *rest):
        marks.setdefault("first_iteration", time.monotonic())
        if callback is not None:
            callback(iteration, *rest)

    return _fit(*args, callback=first, **kwargs)


_dip.fit = fit
try:
    metadip.cli.main(sys.argv[2:], standalone_mode=False)
finally:
    marks["end"] = time.monotonic()
    marks["metadip_file"] = metadip.cli.__file__
    marks["modules"] = sorted(m for m in sys.argv[1].split(",") if m in sys.modules)
    print("PROBE " + json.dumps(marks))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def extract(rev: str, dest: Path) -> None:
    """The ``metadip`` package of commit ``rev`` under ``dest`` (git archive: read-only for the repository)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "metadip"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def console_script() -> list[str]:
    script = Path(sys.executable).parent / "metadip"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "metadip"]


class Version:
    def __init__(self, label: str, tree: Path, work: Path) -> None:
        self.label, self.tree, self.work = label, tree, work
        self.env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.plain: list[float] = []
        self.probes: list[dict] = []

    def run(self, command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
        launch = time.monotonic()
        done = subprocess.run(command, cwd=self.work, env=self.env, capture_output=True, text=True, **kwargs)
        end = time.monotonic()
        if done.returncode != 0:
            raise SystemExit(f"{self.label}: {' '.join(command)} failed:\n{done.stderr}")
        return done, launch, end

    def reconstruct_args(self, y: str, out: str, *extra: str) -> list[str]:
        return ["reconstruct", y, "--out", out, *extra]

    def time_plain(self, y: str) -> float:
        _, launch, end = self.run(console_script() + self.reconstruct_args(y, f"x-{self.label}.png", *TINY))
        return end - launch

    def time_probed(self, y: str) -> dict:
        args = self.reconstruct_args(y, f"x-{self.label}.png", *TINY)
        done, launch, end = self.run([sys.executable, "-c", PROBE, ",".join(HEAVY), *args])
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith("PROBE "))
        marks = json.loads(line[len("PROBE ") :])
        if not Path(marks["metadip_file"]).resolve().is_relative_to(self.tree.resolve()):
            raise SystemExit(f"{self.label}: imported metadip from {marks['metadip_file']}, not from {self.tree}")
        marks.update(launch=launch, exit=end)
        return marks


def summarise(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": [round(v, 3) for v in values],
    }


def version_report(version: Version) -> dict:
    probes = version.probes
    segments = {key: summarise([p[to] - p[frm] for p in probes]) for key, _, frm, to in SEGMENTS}
    return {
        "tree": str(version.tree),
        "reconstruct_wall_s": summarise(version.plain),
        "probed_to_first_iteration_s": summarise([p["first_iteration"] - p["launch"] for p in probes]),
        "probed_total_s": summarise([p["exit"] - p["launch"] for p in probes]),
        "segments_s": segments,
        "modules_loaded": sorted({m for p in probes for m in p["modules"]}),
    }


def output_check(versions: list[Version], work: Path) -> list[dict]:
    """50 iterations from the shipped init on 48 px measurements, by every version: same PNG and history?"""
    import numpy as np
    from PIL import Image

    rows = []
    for index, spec in enumerate(CHECK_OPERATORS):
        y = f"check{index}.png"
        versions[-1].run(
            console_script()
            + ["simulate", "sample:astronaut", "--size", str(SIZE), "--operator", spec, "--seed", "0", "--out", y]
        )
        outputs = {}
        for version in versions:
            out, history = f"check{index}-{version.label}.png", f"check{index}-{version.label}.json"
            extra = ["--iterations", str(CHECK_ITERATIONS), "--history", history, "--no-progress"]
            version.run(console_script() + version.reconstruct_args(y, out, *extra))
            image = np.asarray(Image.open(work / out))
            record = json.loads((work / history).read_text(encoding="utf-8"))
            outputs[version.label] = (image, record)
        (first_image, first_record), (second_image, second_record) = outputs.values()
        keys = ("loss", "holdout_loss", "stop_iteration", "stop_reason", "output_iteration", "init")
        rows.append(
            {
                "operator": spec,
                "init": first_record.get("init"),
                "stop": f"{first_record.get('stop_reason')} at {first_record.get('stop_iteration')}",
                "image_identical": bool(np.array_equal(first_image, second_image)),
                "history_identical": all(first_record.get(k) == second_record.get(k) for k in keys),
                "max_abs_pixel_difference": int(np.abs(first_image.astype(int) - second_image.astype(int)).max()),
            }
        )
    return rows


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpu_count": cores,
        "torch": importlib.metadata.version("torch"),
        "python": platform.python_version(),
        "threads": 1,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def to_markdown(report: dict) -> str:
    m = report["machine"]
    before, after = report["versions"]["before"], report["versions"]["after"]
    n = report["settings"]["runs"]

    def cell(entry: dict) -> str:
        return f"{entry['median']:.2f} [{entry['min']:.2f}–{entry['max']:.2f}]"

    def ratio(key: str) -> str:
        b, a = before[key]["median"], after[key]["median"]
        return f"−{b - a:.2f} s ({a / b:.0%} of before)" if a < b else f"+{a - b:.2f} s"

    lines = [
        "# Start-up time of a tiny `metadip reconstruct`",
        "",
        f"The job: `metadip simulate sample:astronaut --size {SIZE} --operator denoise:sigma=25 --seed 0 --out "
        "y.png` once, then `metadip reconstruct y.png --iterations 3 --out x.png --no-progress` (shipped init "
        "chosen by `--init auto`), one thread. Seconds, median of "
        f"{n} runs [min–max]; BEFORE and AFTER were measured in the same run of `{report['settings']['command']}`, "
        "on the same machine the same day, rounds alternating the order of the two versions.",
        "",
        f"- **BEFORE**: commit `{report['commits']['before']}` (its `metadip/` extracted with `git archive`).",
        f"- **AFTER**: {report['commits']['after']}.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPU cores, torch {m['torch']}, Python {m['python']}, "
        f"OMP_NUM_THREADS=1. Date: {m['date']}.",
        "",
        f"**Noisy numbers**: the machine was shared with long background jobs (meta-training) while this ran: "
        f"1/5/15-minute load averages {m['load_average_at_start']} at the start and {m.get('load_average_at_end')} "
        f"at the end, on {m['cpu_count']} cores. Every process competed for a core, so absolute seconds are "
        "inflated and vary from run to run; the medians and the before/after difference (timed interleaved) are "
        "the meaningful part.",
        "",
        "| | BEFORE | AFTER | change |",
        "|---|---:|---:|---|",
        f"| `metadip reconstruct` wall time, process start to exit | {cell(before['reconstruct_wall_s'])} | "
        f"{cell(after['reconstruct_wall_s'])} | {ratio('reconstruct_wall_s')} |",
        f"| probed run: process start to end of the first DIP iteration | "
        f"{cell(before['probed_to_first_iteration_s'])} | {cell(after['probed_to_first_iteration_s'])} | "
        f"{ratio('probed_to_first_iteration_s')} |",
        f"| probed run: process start to exit | {cell(before['probed_total_s'])} | "
        f"{cell(after['probed_total_s'])} | {ratio('probed_total_s')} |",
        "",
        "Breakdown of the probed runs (medians of each segment, so they need not add up to the total exactly):",
        "",
        "| segment | BEFORE | AFTER |",
        "|---|---:|---:|",
    ]
    for key, label, _, _ in SEGMENTS:
        lines.append(f"| {label} | {cell(before['segments_s'][key])} | {cell(after['segments_s'][key])} |")
    lines += [
        "",
        "Heavy modules loaded by the run: BEFORE "
        + (", ".join(f"`{x}`" for x in before["modules_loaded"]) or "none")
        + "; AFTER "
        + (", ".join(f"`{x}`" for x in after["modules_loaded"]) or "none")
        + " (`tqdm` comes with `import torch` itself, through `torch.hub`).",
        "",
        "What changed: (1) the online DIP loop's optimiser (`metadip/optim.py`) is a copy of `torch.optim.Adam`'s "
        "CPU arithmetic instead of `torch.optim.Adam` itself, whose first use imports `torch._dynamo` (and sympy "
        'with it): the BEFORE "first iteration" segment, beyond the iteration itself; (2) the `metadip` command '
        "freezes the garbage collector's generations at exit (`gc.freeze` in an `atexit` hook, `metadip/cli.py`), "
        "so Python's final collection no longer walks torch's ~2·10⁵ objects one by one: the \"interpreter exit\" "
        "segment. What is left is mostly `import torch` itself, which metadip cannot cut (metadip imports no "
        "matplotlib, scipy, scikit-image or TensorBoard on this path).",
        "",
        f"## Same outputs: {CHECK_ITERATIONS}-iteration reconstructs of {SIZE} px measurements",
        "",
        "`metadip reconstruct y.png --iterations 50 --history h.json` by both versions (shipped init via "
        "`--init auto`, its own stopping rule): the PNGs compared pixel for pixel, the histories (loss, hold-out "
        "loss, stop, chosen iteration) float for float.",
        "",
        "| operator | init | stop | image identical | history identical |",
        "|---|---|---|---|---|",
    ]
    for row in report["output_check"]:
        lines.append(
            f"| {row['operator']} | {row['init']} | {row['stop']} | {'yes' if row['image_identical'] else 'NO'} | "
            f"{'yes' if row['history_identical'] else 'NO'} |"
        )
    lines += [
        "",
        f"Raw numbers: [startup.json](startup.json). Benchmark wall time: {report['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (each: both versions, plain + probed)")
    parser.add_argument("--baseline", default="HEAD", help="the BEFORE commit (default: HEAD)")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--no-write", action="store_true", help="print the report, write nothing")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    before_commit = git("rev-parse", "--short", args.baseline)
    head = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "metadip"))
    after_text = f"the working tree on top of commit `{head}`" + (
        " (with uncommitted changes in `metadip/` when measured, these start-up changes among them)" if dirty else ""
    )
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        scratch_path = Path(scratch)
        extract(before_commit, scratch_path / "before")
        work = scratch_path / "work"
        work.mkdir()
        before = Version("before", scratch_path / "before", work)
        after = Version("after", ROOT, work)
        versions = [before, after]
        after.run(
            console_script()
            + ["simulate", "sample:astronaut", "--size", str(SIZE), "--operator", "denoise:sigma=25", "--seed", "0"]
            + ["--out", "y.png"]
        )
        for version in versions:  # warm-up: byte-compile the extracted tree, fill the page cache
            version.time_plain("y.png")
        for round_index in range(args.runs):
            order = versions if round_index % 2 == 0 else versions[::-1]
            for version in order:
                version.plain.append(version.time_plain("y.png"))
                version.probes.append(version.time_probed("y.png"))
            print(
                f"round {round_index + 1}/{args.runs}: "
                + ", ".join(f"{v.label} {v.plain[-1]:.2f} s" for v in versions),
                flush=True,
            )
        check = output_check(versions, work)
        shutil.rmtree(work, ignore_errors=True)
    machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report = {
        "machine": machine,
        "settings": {
            "command": "python evaluate/bench_startup.py" + "".join(" " + a for a in argv),
            "runs": args.runs,
            "job": f"reconstruct y.png --iterations 3 --no-progress (y: sample:astronaut {SIZE} px, denoise:sigma=25)",
        },
        "commits": {"before": before_commit, "after": after_text},
        "versions": {v.label: version_report(v) for v in versions},
        "output_check": check,
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = to_markdown(report)
    if args.no_write:
        print(text)
        return 0
    sys.path.insert(0, str(ROOT))
    from metadip.fileio import atomic_write_json, atomic_write_text

    out = Path(args.out_dir)
    atomic_write_json(out / "startup.json", report)
    atomic_write_text(out / "startup.md", text)
    print(f"wrote {out / 'startup.json'} and {out / 'startup.md'} in {report['seconds']:.0f} s")
    identical = all(row["image_identical"] and row["history_identical"] for row in check)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
