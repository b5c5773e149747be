"""README's headline table and docs/RESULTS.md, generated from the committed ``evaluate/results/<suite>/results.json``.

    python evaluate/readme_table.py              # print README's headline block
    python evaluate/readme_table.py --update     # rewrite README's block and docs/RESULTS.md

The headline rows are what ``metadip reconstruct --init auto`` gets, from suites run with ``init = "auto"``
(each operator gets the init auto picks for it) and every arm run to convergence (``converge = true``); a setting
whose auto pick changed since, or that was re-run with a higher cap or more seeds, is drawn from a later converged
suite of today's pick on the same pictures and at least the same seeds (:func:`auto_pick`, :func:`replacements`): random
init's peak, auto's peak, the best classical method on the same measurements, Δ peak, the speedup at random's
peak − 0.5 dB (median [IQR]) and at − 1 / − 2 dB (the frontier), and seconds per reconstruction for both arms.
A setting where random init hit its iteration cap while still improving is marked ⚠ (its "peak" is the cap's).

docs/RESULTS.md lists every suite's every setting the same way; suites run with a fixed budget are marked ⚠
wherever random init was still improving at the end of it.

Only the lines between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md are touched; a
README without both markers is left alone (an error is printed). The quick suite is a smoke test and is left
out unless ``--include-quick`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "evaluate" / "results"
README = ROOT / "README.md"
RESULTS_DOC = ROOT / "docs" / "RESULTS.md"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
DOMAIN_BEGIN = "<!-- domain:begin -->"
DOMAIN_END = "<!-- domain:end -->"
#: Suites first in this order, then any other suite alphabetically.
ORDER = ("default", "grey", "size256", "phantom", "phantom-complex", "quick")
#: Classical methods that are only a view of the measurement, never "the cheap method" of a row.
VIEWS = ("measurement", "zero_filled")


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def find_results(root: Path = RESULTS, include_quick: bool = False) -> list[tuple[str, Path]]:
    """(suite, results.json) for every suite folder that has results, in README order."""
    found = {p.parent.name: p for p in sorted(root.glob("*/results.json"))} if root.is_dir() else {}
    if not include_quick:
        found.pop("quick", None)
    ordered = [s for s in ORDER if s in found] + sorted(s for s in found if s not in ORDER)
    return [(s, found[s]) for s in ordered]


def _still_improving(case: dict) -> bool:
    sys.path.insert(0, str(ROOT))
    from metadip.evaluation import still_improving

    return still_improving(case)


def capped(results: dict, setting: str) -> tuple[int, int]:
    """(random runs of ``setting`` that ended while still improving, random runs)."""
    cases = [c for c in results["cases"] if c["init"] == "random" and f"{c['operator']} @ {c['size']}px" == setting]
    return sum(_still_improving(c) for c in cases), len(cases)


def best_classical(summary: dict) -> str:
    """``name value`` of the best classical method of a setting (views of the measurement excluded)."""
    base = {k: v for k, v in (summary.get("baselines_median") or {}).items() if k not in VIEWS and v is not None}
    if not base:
        return "–"
    name = max(base, key=base.get)
    return f"{name.replace('_', ' ')} {base[name]:.2f}"


def _mark(results: dict, setting: str) -> str:
    late, total = capped(results, setting)
    return f" ⚠ {late}/{total}" if late else ""


def _frontier(summary: dict, delta: str) -> str:
    front = (summary.get("frontier") or {}).get(delta)
    return "–" if front is None else f"×{_fmt(front.get('speedup_median'), 1)}"


def _init_names(results: dict, setting: str) -> str:
    names = sorted({c["init_name"] for c in results["cases"] if c["init"] == "meta" and _setting(c) == setting})
    return ", ".join(names) if names else "random init"


def _setting(case: dict) -> str:
    return f"{case['operator']} @ {case['size']}px"


def converged_named(results: dict) -> bool:
    """Whether a suite ran one named init (a domain init such as ``phantom-fourier``, not auto or random) with
    every arm to convergence."""
    options = results.get("config", {}).get("options") or {}
    return bool(options.get("converge")) and str(options.get("init", "")) not in ("", "auto", "random")


def converged_auto(results: dict) -> bool:
    """Whether a suite ran ``--init auto`` per operator with every arm to convergence."""
    options = results.get("config", {}).get("options") or {}
    return bool(options.get("converge")) and str(options.get("init", "")) == "auto"


def _pairs(results: dict, setting: str) -> set[tuple[str, int]]:
    return {(c["image"], c["seed"]) for c in results["cases"] if c["init"] == "meta" and _setting(c) == setting}


def channels_of(results: dict) -> int:
    """The pictures' channel count of a suite (its networks' output channels: 1 grey, 2 complex, 3 RGB)."""
    config = results.get("config", {})
    arch = (config.get("init") or {}).get("arch") or (config.get("random") or {}).get("arch_config") or {}
    return int(arch.get("out_channels", 3))


def auto_pick(results: dict) -> bool:
    """Whether a converged suite of one named init measured, on each of its settings, the init that ``--init
    auto`` picks for that operator today for pictures of the suite's channel count (e.g. a family's init shipped
    after the auto suite ran)."""
    if not converged_named(results):
        return False
    sys.path.insert(0, str(ROOT))
    from metadip.checkpoint import shipped_init_for_spec

    channels = channels_of(results)
    settings = {(c["operator"], c["size"], c["init_name"]) for c in results["cases"] if c["init"] == "meta"}
    return bool(settings) and all(
        shipped_init_for_spec(operator, size, channels) == name for operator, size, name in settings
    )


def replacements(loaded: dict[str, tuple[dict, str]], results: dict) -> dict[str, tuple[dict, str]]:
    """Settings of the auto suite ``results`` that a later :func:`auto_pick` suite measured on the same pictures
    (with the same channel count: a grey suite never stands in for an RGB row) and (at least) the same seeds — a
    new pick, a higher iteration cap, more seeds: setting → (that suite's results, link); its row replaces the
    auto suite's. Where several do, the one with the most pairs wins."""
    channels = channels_of(results)
    picks = [(other, link) for other, link in loaded.values() if channels_of(other) == channels and auto_pick(other)]
    found = {}
    for setting in results["summary"]["by_setting"]:
        for other, link in picks:
            if setting in other["summary"]["by_setting"] and _pairs(other, setting) >= _pairs(results, setting):
                if setting not in found or len(_pairs(other, setting)) > len(_pairs(found[setting][0], setting)):
                    found[setting] = (other, link)
    return found


HEADER = (
    "| operator @ size | n | random peak | `--init auto` peak (init) | Δ peak | best classical | speedup at peak "
    "− 0.5 dB median [IQR] | at − 1 / − 2 dB | seconds per run (random / auto) |"
)


def auto_now(results: dict, setting: str) -> str | None:
    """What ``--init auto`` picks today for the operator of an auto suite's ``setting`` that the suite measured with
    a meta init, when that has changed since: ``"random"`` (the init was retired from that operator, e.g. by
    ``avoid_for``) or the name of another init (a family's init shipped since, measured elsewhere on other
    pictures or seeds); None when it is still the measured init, or the setting has no meta arm."""
    sys.path.insert(0, str(ROOT))
    from metadip.checkpoint import shipped_init_for_spec

    cases = [c for c in results["cases"] if c["init"] == "meta" and _setting(c) == setting]
    if not cases:
        return None
    pick = shipped_init_for_spec(cases[0]["operator"], int(cases[0]["size"]), channels_of(results))
    if pick is None:
        return "random"
    return None if pick in {c["init_name"] for c in cases} else pick


def headline_rows(
    results: dict, link: str, prefix: str = "", replaced: dict[str, tuple[dict, str]] | None = None, auto: bool = False
) -> list[str]:
    """One row per setting of ``results``; a setting in ``replaced`` is drawn from that suite instead. ``auto``:
    rows of an auto suite, where auto now picks random init or another init for a setting (:func:`auto_now`), say
    so."""
    rows = []
    own_results, own_link = results, link
    for setting in own_results["summary"]["by_setting"]:
        results, link = (replaced or {}).get(setting, (own_results, own_link))
        s = results["summary"]["by_setting"][setting]
        tag = f" ({s.get('coverage')})" if s.get("coverage") not in (None, "seen") else ""
        name = f"{prefix}[{setting}]({link}){tag}{_mark(results, setting)}"
        now = auto_now(results, setting) if auto else None
        if now == "random":
            rows.append(
                f"| {name} | {s['n_pairs']} | {_fmt(s.get('random_peak_psnr_median'))} | = random (auto picks random "
                f"init now; {_init_names(results, setting)} measured {_signed(s.get('delta_peak_median'))} dB, "
                f"×{_fmt(s.get('speedup_median'), 1)}) | ±0.00 | {best_classical(s)} | ×1.0 | ×1.0 / ×1.0 | "
                f"{_fmt(s.get('random_seconds_median'), 0)} / same |"
            )
        elif s.get("n_pairs"):
            note = f"; auto picks {now} now, not measured on these pairs" if now else ""
            measured = _init_names(results, setting) + note
            rows.append(
                f"| {name} | {s['n_pairs']} | {_fmt(s.get('random_peak_psnr_median'))} | "
                f"{_fmt(s.get('meta_peak_psnr_median'))} ({measured}) | "
                f"{_signed(s.get('delta_peak_median'))} | {best_classical(s)} | "
                f"×{_fmt(s.get('speedup_median'), 1)} [{_fmt(s.get('speedup_iqr'), 1)}] | "
                f"{_frontier(s, '1')} / {_frontier(s, '2')} | "
                f"{_fmt(s.get('random_seconds_median'), 0)} / {_fmt(s.get('meta_seconds_median'), 0)} |"
            )
        else:
            rows.append(
                f"| {name} | {s['n_cases']} | {_fmt(s.get('random_peak_psnr_median'))} | = random (auto picks random "
                f"init) | ±0.00 | {best_classical(s)} | ×1.0 | ×1.0 / ×1.0 | "
                f"{_fmt(s.get('random_seconds_median'), 0)} / same |"
            )
    return rows


DOMAIN_HEADER = (
    "| suite: operator @ size | n | random peak | init peak (init) | Δ peak | best classical | speedup at peak "
    "− 0.5 dB median [IQR] | at − 1 / − 2 dB | seconds per run (random / init) |"
)


def family_init(results: dict) -> bool:
    """Whether the suite's meta init names operators ``--init auto`` picks it for (``recommended_for`` in its
    sidecar): a family init — one superseded by a later pick is no domain init."""
    sys.path.insert(0, str(ROOT))
    from metadip.checkpoint import load_checkpoint
    from metadip.errors import MetadipError

    names = {c["init_name"] for c in results["cases"] if c["init"] == "meta"}
    try:
        return any(load_checkpoint(name).recommended_for for name in names)
    except (MetadipError, OSError):
        return False


def domain(loaded: dict[str, tuple[dict, str]]) -> str:
    """README's domain-init block: converged suites of one named init (:func:`converged_named`) that auto does
    not pick today and that is not a family init (:func:`family_init`)."""
    chosen = [
        (suite, r, link)
        for suite, (r, link) in loaded.items()
        if converged_named(r) and not auto_pick(r) and not family_init(r)
    ]
    if not chosen:
        return "No domain init has been evaluated to convergence yet."
    lines = [
        "_Generated by `python evaluate/readme_table.py --update`; do not edit by hand._",
        "",
        DOMAIN_HEADER,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for suite, results, link in chosen:
        lines += headline_rows(results, link, prefix=f"{suite}: ")
    pictures = sorted({p for _, r, _ in chosen for p in r.get("config", {}).get("images", [])})
    lines += ["", f"Held-out pictures: {', '.join(pictures)}. Columns as in the results table above."]
    return "\n".join(lines)


def headline(loaded: dict[str, tuple[dict, str]]) -> str:
    lines = [
        "_Generated by `python evaluate/readme_table.py --update` from `evaluate/results/*/results.json`; do not "
        "edit by hand. Every setting of [docs/RESULTS.md](docs/RESULTS.md) comes from the same files._",
        "",
    ]
    chosen = [(suite, r, link) for suite, (r, link) in loaded.items() if converged_auto(r)]
    if not chosen:
        return "\n".join(lines + ["No suite has been run with `--init auto` to convergence yet."])
    for suite, results, link in chosen:
        pictures = ", ".join(results.get("config", {}).get("images", []))
        lines += [f"**{suite}** — held-out pictures: {pictures}.", "", HEADER, "|---|---|---|---|---|---|---|---|---|"]
        replaced = replacements(loaded, results)
        lines += headline_rows(results, link, replaced=replaced, auto=True)
        lines.append("")
        if replaced:
            lines += [
                f"Rows of {', '.join(sorted(set(replaced)))} come from a later suite of the init `--init auto` "
                "picks for them today (a newer init, a higher iteration cap or more seeds; the same pictures and "
                "measurements, both arms re-run there; linked).",
                "",
            ]
    lines.append(
        "Medians over pictures × seeds. Both arms run until their PSNR has passed its peak (no 0.01 dB gain for "
        "max(500, half the iterations so far)); ⚠ k/n: k random runs hit the iteration cap while still improving. "
        "Speedup = iterations random init needs to first reach its peak − δ ÷ iterations `--init auto` needs "
        "(0 when it never does). Best classical: BM3D / TV (denoise), biharmonic fill (inpaint), bicubic / "
        "Tikhonov (super-resolution), Tikhonov with its best λ (deblur), TV least squares (Fourier) on the same "
        "measurements, λ picked with the clean image."
    )
    return "\n".join(lines)


def full_rows(suite: str, results: dict, link: str) -> list[str]:
    rows = []
    for setting, s in results["summary"]["by_setting"].items():
        coverage = s.get("coverage") or ""
        tag = s.get("tag") or ""
        label = tag if not coverage or coverage == tag else f"{tag} ({coverage})" if tag else coverage
        mark = _mark(results, setting)
        meta = f"{_fmt(s.get('meta_peak_psnr_median'))}" if s.get("n_pairs") else "–"
        rows.append(
            f"| [{suite}]({link}) | {setting}{mark} | {label} | {s['n_cases']} | "
            f"{_fmt(s.get('random_peak_psnr_median'))} | {meta} | {_signed(s.get('delta_peak_median'))} | "
            f"{_signed(s.get('delta_stop_median'))} | {best_classical(s)} | ×{_fmt(s.get('speedup_median'), 1)} "
            f"[{_fmt(s.get('speedup_iqr'), 1)}] | {_frontier(s, '1')} / {_frontier(s, '2')} |"
        )
    return rows


def full_document(loaded: dict[str, tuple[dict, str]]) -> str:
    lines = [
        "# Results: every suite, every setting",
        "",
        "_Generated by `python evaluate/readme_table.py --update` from `evaluate/results/*/results.json`; do not "
        "edit by hand._ README.md shows the `--init auto` rows only.",
        "",
        "| suite | operator @ size | tag (in training?) | n | random peak | meta peak | Δ peak | Δ at stop | best "
        "classical | speedup at peak − 0.5 dB [IQR] | at − 1 / − 2 dB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for suite, (results, link) in loaded.items():
        lines += full_rows(suite, results, link)
        config = results.get("config", {})
        options = config.get("options") or {}
        init = config.get("init", {})
        mode = "to convergence" if options.get("converge") else f"fixed budget {config.get('iterations')}"
        notes.append(
            f"- `{suite}`: init {init.get('name', '?')} (sha256 {str(init.get('sha256') or '')[:12]}…), {mode}, "
            f"{config.get('date', '?')}, {config.get('device', '?')}."
        )
    lines += [
        "",
        "Medians over held-out pictures × seeds. ⚠ k/n: in k of n runs random init was still improving when its "
        "run ended (the cap of a converged suite, or the fixed budget of an older one), so its peak is the "
        "budget's and the speedup flatters the meta init. Δ = meta − random; speedup as in README.md.",
        "",
        *notes,
    ]
    return "\n".join(lines) + "\n"


def load(root: Path, include_quick: bool, base_dir: Path) -> dict[str, tuple[dict, str]]:
    loaded: dict[str, tuple[dict, str]] = {}
    for suite, path in find_results(root, include_quick):
        results = json.loads(path.read_text(encoding="utf-8"))
        link = Path(os.path.relpath(path.parent / "report.md", base_dir)).as_posix()
        loaded[suite] = (results, link)
    return loaded


def table(root: Path = RESULTS, include_quick: bool = False, readme_dir: Path = ROOT) -> str:
    """README's block (without the markers)."""
    return headline(load(root, include_quick, readme_dir))


def _replace_block(text: str, block: str, begin: str, end_marker: str, readme: Path) -> str:
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < 0 or end < start:
        raise SystemExit(f"error: {readme} lacks the markers {begin} … {end_marker}; add them where the table goes")
    return text[: start + len(begin)] + "\n" + block.rstrip("\n") + "\n" + text[end:]


def update_readme(block: str, readme: Path = README, domain_block: str | None = None) -> bool:
    """Replace the text between the markers (and, given ``domain_block``, between the domain markers when README
    has them); returns True when README.md changed."""
    if not readme.is_file():
        raise SystemExit(f"error: {readme} not found")
    text = readme.read_text(encoding="utf-8")
    new = _replace_block(text, block, BEGIN, END, readme)
    if domain_block is not None and DOMAIN_BEGIN in new:
        new = _replace_block(new, domain_block, DOMAIN_BEGIN, DOMAIN_END, readme)
    if new == text:
        return False
    sys.path.insert(0, str(ROOT))
    from metadip.fileio import atomic_write_text

    atomic_write_text(readme, new)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite README.md's block and docs/RESULTS.md")
    parser.add_argument("--include-quick", action="store_true", help="also list the quick (smoke) suite")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of suite results")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results-doc", type=Path, default=None, help="default: docs/RESULTS.md beside README")
    args = parser.parse_args(argv)
    readme_dir = args.readme.resolve().parent
    block = table(args.results, args.include_quick, readme_dir)
    if args.update:
        loaded = load(args.results, args.include_quick, readme_dir)
        changed = update_readme(block, args.readme, domain(loaded))
        doc = args.results_doc or readme_dir / "docs" / "RESULTS.md"
        doc.parent.mkdir(parents=True, exist_ok=True)
        sys.path.insert(0, str(ROOT))
        from metadip.fileio import atomic_write_text

        atomic_write_text(doc, full_document(load(args.results, args.include_quick, doc.parent)))
        print(f"{args.readme}: results table {'updated' if changed else 'already up to date'}; wrote {doc}")
    else:
        print(block)
        print()
        print(domain(load(args.results, args.include_quick, readme_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
