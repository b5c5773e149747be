"""README's results table, generated from the committed ``evaluate/results/<suite>/results.json``.

    python evaluate/readme_table.py              # print the markdown table
    python evaluate/readme_table.py --update     # replace the block between the markers in README.md

The first rows, suite ``auto``, are what ``metadip reconstruct --init auto`` gets: for each setting of the
``default`` suite, the init ``--init auto`` picks from the shipped checkpoints (their ``recommended_for`` /
``avoid_for``): the default suite's row when it is the default suite's init, the row of the suite that ran the
chosen init on the same measurements (same random-arm cases; ``auto ← SUITE``), or the random arm's own
numbers when auto falls back to random init (``auto → random init``). No case is computed for these rows;
they are the other suites' rows, picked by the rule ``--init auto`` follows. The ``auto (grey)`` rows do the
same for grey pictures, from the ``grey`` suite's settings.

Only the lines between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md are touched; a
README without both markers is left alone (an error is printed). The quick suite is a smoke test and is left
out unless ``--include-quick`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "evaluate" / "results"
README = ROOT / "README.md"
#: The suite whose init is the universal default; the ``auto`` rows start from it.
DEFAULT_SUITE = "default"
#: The same for grey pictures: the ``auto (grey)`` rows start from it.
GREY_SUITE = "grey"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
#: Suites first in this order, then any other suite alphabetically (run_suites.py runs them in this order too,
#: after the quick suite).
ORDER = (
    "default",
    "default-universal-slim",
    "ablation",
    "size256",
    "default-universal-slim-maps",
    "default-universal-slim-tikhonov",
    "default-universal-slim-superres",
    "grey",
    "grey-universal-slim-tikhonov-grey",
    "grey-universal-slim-superres-grey",
    "grey-size256",
    "ablation-warmstart",
    "quick",
)


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _iters(value) -> str:
    return "never" if value is None else f"{value:.0f}"


def find_results(root: Path = RESULTS, include_quick: bool = False) -> list[tuple[str, Path]]:
    """(suite, results.json) for every suite folder that has results, in README order."""
    found = {p.parent.name: p for p in sorted(root.glob("*/results.json"))} if root.is_dir() else {}
    if not include_quick:
        found.pop("quick", None)
    ordered = [s for s in ORDER if s in found] + sorted(s for s in found if s not in ORDER)
    return [(s, found[s]) for s in ordered]


def rows_for(suite: str, results: dict, link: str) -> list[str]:
    rows = []
    for setting, s in results["summary"]["by_setting"].items():
        coverage = s.get("coverage") or ""
        tag = s.get("tag") or ""
        label = tag if not coverage or coverage == tag else f"{tag} ({coverage})" if tag else coverage
        if s.get("n_pairs"):
            rows.append(
                f"| [{suite}]({link}) | {setting} | {label} | {s['n_cases']} | "
                f"{_fmt(s.get('random_peak_psnr_median'))} | {_fmt(s.get('meta_peak_psnr_median'))} | "
                f"{_signed(s.get('delta_stop_median'))} | "
                f"{_iters(s.get('iterations_to_target_random_median'))} → "
                f"{_iters(s.get('iterations_to_target_meta_median'))} | ×{_fmt(s.get('speedup_median'), 1)} "
                f"[{_fmt(s.get('speedup_iqr'), 1)}] | ×{_fmt(s.get('wall_clock_ratio_median'), 1)} |"
            )
        else:
            rows.append(
                f"| [{suite}]({link}) | {setting} | {label} | {s['n_cases']} | "
                f"{_fmt(s.get('random_peak_psnr_median'))} | – | – | "
                f"{_iters(s.get('iterations_to_target_random_median'))} → – | – | – |"
            )
    return rows


def shipped_choice(operator: str, size: int, channels: int = 3) -> str | None:
    """The init ``metadip reconstruct --init auto`` picks for an ``operator`` (a spec) at ``size`` px on pictures
    with ``channels`` channels from the repository's ``checkpoints/`` alone (``$METADIP_CHECKPOINTS`` ignored),
    or None for random init."""
    sys.path.insert(0, str(ROOT))
    from metadip import checkpoint

    saved = os.environ.pop(checkpoint.ENV_VAR, None)
    try:
        return checkpoint.shipped_init_for_spec(operator, size, channels=channels)
    finally:
        if saved is not None:
            os.environ[checkpoint.ENV_VAR] = saved


def _random_cases(results: dict, setting: str) -> list:
    """The random arm's cases of ``setting`` (identity of the measurements and of the baseline)."""
    return sorted(
        (c["pair_key"], c.get("peak_psnr"))
        for c in results["cases"]
        if c["init"] == "random" and f"{c['operator']} @ {c['size']}px" == setting
    )


def auto_rows(
    loaded: dict[str, tuple[dict, str]],
    choose: Callable[[str, int], str | None] = shipped_choice,
    base_suite: str = DEFAULT_SUITE,
    label: str = "auto",
) -> list[str]:
    """The ``auto`` rows (see the module docstring), named ``label``, from the settings of ``base_suite``; []
    without that suite. ``choose(operator, size)`` names the init ``--init auto`` picks (None: random init)."""
    if base_suite not in loaded:
        return []
    base, base_link = loaded[base_suite]
    base_init = base.get("config", {}).get("init", {}).get("name")
    rows = []
    for setting, summary in base["summary"]["by_setting"].items():
        wanted = choose(str(summary["operator"]), int(summary["size"]))
        if wanted is None:  # auto falls back to random init here: the random arm's own numbers
            peak = _fmt(summary.get("random_peak_psnr_median"))
            iters = _iters(summary.get("iterations_to_target_random_median"))
            rows.append(
                f"| [{label} → random init]({base_link}) | {setting} | {summary.get('tag') or ''} | "
                f"{summary['n_cases']} | {peak} | {peak} (random) | +0.00 | {iters} → {iters} | ×1.0 | ×1.0 |"
            )
            continue
        source, results, link = base_suite, base, base_link
        if wanted != base_init:
            for suite, (other, other_link) in loaded.items():
                if (
                    other.get("config", {}).get("init", {}).get("name") == wanted
                    and setting in other["summary"]["by_setting"]
                    and _random_cases(other, setting) == _random_cases(base, setting)
                ):
                    source, results, link = suite, other, other_link
                    break
            else:
                continue  # no suite ran that init on these measurements: no auto row for this setting
        one = {**results, "summary": {"by_setting": {setting: results["summary"]["by_setting"][setting]}}}
        name = label if source == base_suite else f"{label} ← {source}"
        prefix = f"| [{source}]({link}) |"
        rows += [row.replace(prefix, f"| [{name}]({link}) |", 1) for row in rows_for(source, one, link)]
    return rows


def table(root: Path = RESULTS, include_quick: bool = False, readme_dir: Path = ROOT) -> str:
    """The markdown block (without the markers)."""
    entries = find_results(root, include_quick)
    lines = [
        "_Generated by `python evaluate/readme_table.py --update` from `evaluate/results/*/results.json` "
        "(rerun everything: `python evaluate/run_suites.py`); do not edit by hand._",
        "",
    ]
    if not entries:
        return "\n".join(lines + ["No committed evaluation results yet: run `python evaluate/run_suites.py`."])
    lines += [
        "| suite | operator @ size | tag (in training?) | n | random peak (dB) | meta peak (dB) | Δ "
        "PSNR at stop (dB) "
        "| iterations to random's peak − 0.5 dB (random → meta) | speedup median [IQR] | wall-clock ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    inits = []
    loaded: dict[str, tuple[dict, str]] = {}
    for suite, path in entries:
        results = json.loads(path.read_text(encoding="utf-8"))
        try:
            link = path.parent.joinpath("report.md").relative_to(readme_dir).as_posix()
        except ValueError:
            link = str(path.parent / "report.md")
        loaded[suite] = (results, link)
    lines += auto_rows(loaded)
    lines += auto_rows(
        loaded, lambda op, size: shipped_choice(op, size, channels=1), base_suite=GREY_SUITE, label="auto (grey)"
    )
    for suite, (results, link) in loaded.items():
        lines += rows_for(suite, results, link)
        config = results.get("config", {})
        init = config.get("init", {})
        sha = str(init.get("sha256") or "")[:12]
        inits.append(
            f"`{suite}`: init {init.get('name', '?')}"
            + (f" (sha256 {sha}…)" if sha else "")
            + f", {config.get('date', '?')}, {config.get('device', '?')}"
        )
    lines += [
        "",
        "Medians over held-out images × seeds; speedup = iterations random init needs to first reach its "
        "peak − 0.5 dB ÷ iterations meta init needs (0 when it never does); Δ at stop = meta − random "
        "PSNR at the no-ground-truth stopping rule's output. `auto` rows: what `--init auto` picks per "
        "operator (`auto ← SUITE`: the shipped init recommended for it, from that suite's identical "
        "measurements; plain `auto`: the default suite's row; `auto (grey)`: the same for grey pictures, from the "
        "grey suite). " + "; ".join(inits) + ".",
    ]
    return "\n".join(lines)


def update_readme(block: str, readme: Path = README) -> bool:
    """Replace the text between the markers; returns True when README.md changed."""
    if not readme.is_file():
        raise SystemExit(f"error: {readme} not found")
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise SystemExit(f"error: {readme} lacks the markers {BEGIN} … {END}; add them where the table goes")
    new = text[: start + len(BEGIN)] + "\n" + block.rstrip("\n") + "\n" + text[end:]
    if new == text:
        return False
    sys.path.insert(0, str(ROOT))
    from metadip.fileio import atomic_write_text

    atomic_write_text(readme, new)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite README.md's results block")
    parser.add_argument("--include-quick", action="store_true", help="also list the quick (smoke) suite")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of suite results")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    block = table(args.results, args.include_quick, args.readme.resolve().parent)
    if args.update:
        changed = update_readme(block, args.readme)
        print(f"{args.readme}: results table {'updated' if changed else 'already up to date'}")
    else:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
