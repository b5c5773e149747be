"""``report.md``: the summary, classical-baseline and frontier tables, and the sentences that read each figure."""

from __future__ import annotations

from pathlib import Path

from metadip.evaluation.report.common import (
    LABELS,
    _arms,
    _cases,
    _fmt,
    _iters,
    _signed,
    capped_mark,
    representative_pair,
    settings,
)
from metadip.evaluation.statistics import still_improving
from metadip.fileio import atomic_write_text

# --------------------------------------------------------------------------------------------------- readings


def _first_below(spectral: dict, band: int, threshold: float) -> int | None:
    for iteration, row in zip(spectral["iterations"], spectral["band_error"], strict=True):
        value = row[band]
        if value is not None and value <= threshold:
            return iteration
    return None


def _late_note(results: dict, setting: str) -> str:
    """A caveat when random init was still improving at the end of the budget (its peak is budget-limited)."""
    cases = _cases(results, setting, "random")
    late = sum(still_improving(c) for c in cases)
    if not late:
        return ""
    budget = max(c.get("budget", c["iterations"]) for c in cases)
    return (
        f" **Random init was still improving at the end of its {budget}-iteration cap in {late} of "
        f"{len(cases)} runs**, so its peak (and the target) is the cap's, not its best."
    )


def curves_reading(results: dict) -> list[str]:
    out = []
    for setting in settings(results):
        s = results["summary"]["by_setting"].get(setting, {})
        n = s.get("n_cases", 0)
        if s.get("n_pairs"):
            out.append(
                f"**{setting}** ({n} images×seeds): meta reaches random's peak − 0.5 dB in a median of "
                f"{_iters(s.get('iterations_to_target_meta_median'))} iterations vs "
                f"{_iters(s.get('iterations_to_target_random_median'))} for random (median speedup "
                f"×{_fmt(s.get('speedup_median'), 1)}, IQR {_fmt(s.get('speedup_iqr'), 1)}; reached in "
                f"{_fmt(100 * (s.get('meta_reached_fraction') or 0), 0)}% of pairs). Peak PSNR "
                f"{_fmt(s.get('meta_peak_psnr_median'))} vs {_fmt(s.get('random_peak_psnr_median'))} dB "
                f"(Δ {_signed(s.get('delta_peak_median'))} dB, meta's peak at iteration "
                f"{_iters(s.get('meta_peak_iteration_median'))} vs "
                f"{_iters(s.get('random_peak_iteration_median'))})"
                f"; at the {results['config'].get('stop_rule', 'wmv')} stop "
                f"{_fmt(s.get('meta_stop_psnr_median'))} vs "
                f"{_fmt(s.get('random_stop_psnr_median'))} dB (Δ {_signed(s.get('delta_stop_median'))})."
                + _late_note(results, setting)
            )
        else:
            arm = "random" if s.get("random_peak_psnr_median") is not None else "meta"
            gap = None
            if s.get(f"{arm}_peak_psnr_median") is not None and s.get(f"{arm}_stop_psnr_median") is not None:
                gap = s[f"{arm}_peak_psnr_median"] - s[f"{arm}_stop_psnr_median"]
            budget = max((c["iterations"] for c in _cases(results, setting, arm)), default=0)
            late = sum(still_improving(c) for c in _cases(results, setting, arm))
            to_target = s.get("iterations_to_target_random_median") if arm == "random" else None
            out.append(
                f"**{setting}** ({n} images×seeds, {arm} init only): median peak "
                f"{_fmt(s.get(f'{arm}_peak_psnr_median'))} dB at iteration "
                f"{_iters(s.get(f'{arm}_peak_iteration_median'))}; it is within 0.5 dB of its peak after "
                f"{_iters(to_target)} iterations; "
                f"the stopping rule stops at {_iters(s.get(f'{arm}_stop_iteration_median'))} with "
                f"{_fmt(s.get(f'{arm}_stop_psnr_median'))} dB ({_fmt(gap)} dB below the peak)."
                + (f" {late} of {n} runs still improve at the end of the {budget}-iteration budget." if late else "")
            )
    return out


def speedup_reading(results: dict) -> str:
    overall = results["summary"]["overall"]
    by_setting = results["summary"]["by_setting"]
    ranked = sorted(
        ((s, v["speedup_median"]) for s, v in by_setting.items() if v.get("speedup_median") is not None),
        key=lambda item: item[1],
    )
    if not ranked:
        return ""
    never = sum(1 for c in results["cases"] if c["init"] == "meta" and c.get("iterations_to_target") is None)
    text = (
        f"Over all {overall['n_pairs']} pairs the median speedup is ×{_fmt(overall['speedup_median'], 1)} "
        f"(IQR {_fmt(overall['speedup_iqr'], 1)}, quartiles {_fmt(overall['speedup_q25'], 1)}–"
        f"{_fmt(overall['speedup_q75'], 1)}); in wall-clock time "
        f"×{_fmt(overall['wall_clock_ratio_median'], 1)} "
        f"(meta {_fmt(overall.get('meta_ms_per_iteration_median'), 1)} ms/iteration vs random "
        f"{_fmt(overall.get('random_ms_per_iteration_median'), 1)}). "
    )
    if len(ranked) > 1:
        text += (
            f"Largest for {ranked[-1][0]} (×{_fmt(ranked[-1][1], 1)}), smallest for {ranked[0][0]} "
            f"(×{_fmt(ranked[0][1], 1)}). "
        )
    text += (
        f"Meta never reached random's target in {never} of {overall['n_pairs']} pairs (counted as 0)."
        if never
        else "Meta reached random's target in every pair."
    )
    below = [s for s, v in ranked if v < 1]
    if below:
        text += f" Meta was slower than random (median < 1) for: {', '.join(below)}."
    return text


def grid_reading(results: dict, setting: str) -> str:
    s = results["summary"]["by_setting"].get(setting, {})
    baselines = s.get("baselines_median") or {}
    parts = []
    if s.get("n_pairs"):
        parts.append(
            f"At the stopping rule's output the median PSNR is {_fmt(s.get('meta_stop_psnr_median'))} dB "
            f"for meta and {_fmt(s.get('random_stop_psnr_median'))} dB for random "
            f"(Δ {_signed(s.get('delta_stop_median'))} dB), stopping at a median iteration of "
            f"{_iters(s.get('meta_stop_iteration_median'))} vs "
            f"{_iters(s.get('random_stop_iteration_median'))}."
        )
    else:
        arm = "random" if s.get("random_stop_psnr_median") is not None else "meta"
        parts.append(
            f"At the stopping rule's output the median PSNR is {_fmt(s.get(f'{arm}_stop_psnr_median'))} dB "
            f"(iteration {_iters(s.get(f'{arm}_stop_iteration_median'))})."
        )
    if baselines:
        parts.append(
            "Context on the same measurements: "
            + ", ".join(f"{name.replace('_', ' ')} {_fmt(v)} dB" for name, v in baselines.items())
            + "."
        )
    return " ".join(parts)


def spectral_reading(results: dict, setting: str) -> str:
    random_case, meta_case = representative_pair(results, setting)
    cases = [(arm, c) for arm, c in (("random", random_case), ("meta", meta_case)) if c and c.get("spectral")]
    if not cases:
        return ""
    first = cases[0][1]
    bands = len(first["spectral"]["band_edges"]) - 1
    sentences = [f"Representative pair: {first['image']}, seed {first['seed']}."]
    for arm, case in cases:
        spectral = case["spectral"]
        low, high = _first_below(spectral, 0, 0.2), _first_below(spectral, bands - 1, 0.5)
        final = spectral["band_error"][-1]
        low_text = f"falls below 0.2 at iteration {low}" if low is not None else "never falls below 0.2"
        high_text = (
            f"the highest band's falls below 0.5 at iteration {high}"
            if high is not None
            else "the highest band's never gets below 0.5"
        )
        sentences.append(
            f"{LABELS[arm].capitalize()}: the lowest band's relative error {low_text}, {high_text}; "
            f"at iteration "
            f"{spectral['iterations'][-1]} they are {_fmt(final[0])} and {_fmt(final[-1])}."
        )
    if len(cases) == 2:
        r, m = cases[0][1]["spectral"], cases[1][1]["spectral"]
        common = [i for i in r["iterations"] if i in m["iterations"]]
        early = [i for i in common if i >= 10][:1] or common[:1]
        if early:
            it = early[0]
            re_row = r["band_error"][r["iterations"].index(it)]
            me_row = m["band_error"][m["iterations"].index(it)]
            better = sum(
                1 for a, b in zip(me_row, re_row, strict=True) if a is not None and b is not None and a < b - 0.01
            )
            worse = sum(
                1 for a, b in zip(me_row, re_row, strict=True) if a is not None and b is not None and a > b + 0.01
            )
            sentences.append(
                f"At iteration {it} meta is closer to the clean image in {better} of {bands} bands "
                f"and further in "
                f"{worse} (lowest band {_fmt(me_row[0])} vs {_fmt(re_row[0])} for random, highest "
                f"{_fmt(me_row[-1])} "
                f"vs {_fmt(re_row[-1])})."
            )
        end_r, end_m = r["band_error"][-1][-1], m["band_error"][-1][-1]
        if end_r is not None and end_m is not None:
            family = first.get("family", "")
            if end_m > end_r + 0.02:
                sentences.append(
                    f"At the end of the budget meta's highest band is further from the clean image "
                    f"than random's "
                    f"({_fmt(end_m)} vs {_fmt(end_r)})"
                    + (": it has fitted more of the noise." if family == "denoise" else ".")
                )
            elif end_m < end_r - 0.02:
                sentences.append(
                    f"At the end of the budget meta's highest band is closer to the clean image than "
                    f"random's ({_fmt(end_m)} vs {_fmt(end_r)})."
                )
            else:
                sentences.append(
                    f"At the end of the budget both arms' highest band errors are about equal "
                    f"({_fmt(end_m)} vs {_fmt(end_r)})."
                )
    return " ".join(sentences)


# --------------------------------------------------------------------------------------------------- markdown


def _summary_table(results: dict) -> list[str]:
    by_setting = results["summary"]["by_setting"]
    with_meta = any(v.get("n_pairs") for v in by_setting.values())
    if with_meta:
        header = (
            "| setting | tag | in training? | n | random peak | meta peak | Δ peak | Δ stop | iters "
            "to target "
            "(random → meta) | speedup median [IQR] | wall-clock ratio | seconds per run (random / meta) |"
        )
        lines = [header, "|" + "---|" * 12]
        for name, s in by_setting.items():
            lines.append(
                f"| {name}{capped_mark(s)} | {s.get('tag') or ''} | {s.get('coverage') or '?'} | {s['n_cases']} | "
                f"{_fmt(s.get('random_peak_psnr_median'))} | "
                f"{_fmt(s.get('meta_peak_psnr_median'))} | {_signed(s.get('delta_peak_median'))} | "
                f"{_signed(s.get('delta_stop_median'))} | "
                f"{_iters(s.get('iterations_to_target_random_median'))} → "
                f"{_iters(s.get('iterations_to_target_meta_median'))} | ×{_fmt(s.get('speedup_median'), 1)} "
                f"[{_fmt(s.get('speedup_iqr'), 1)}] | ×{_fmt(s.get('wall_clock_ratio_median'), 1)} | "
                f"{_fmt(s.get('random_seconds_median'), 1)} / {_fmt(s.get('meta_seconds_median'), 1)} |"
            )
        o = results["summary"]["overall"]
        lines.append(
            f"| **overall** | | | {o['n_cases']} | {_fmt(o.get('random_peak_psnr_median'))} | "
            f"{_fmt(o.get('meta_peak_psnr_median'))} | {_signed(o.get('delta_peak_median'))} | "
            f"{_signed(o.get('delta_stop_median'))} | {_iters(o.get('iterations_to_target_random_median'))} "
            f"→ {_iters(o.get('iterations_to_target_meta_median'))} | ×{_fmt(o.get('speedup_median'), 1)} "
            f"[{_fmt(o.get('speedup_iqr'), 1)}] | ×{_fmt(o.get('wall_clock_ratio_median'), 1)} | "
            f"{_fmt(o.get('random_seconds_median'), 1)} / {_fmt(o.get('meta_seconds_median'), 1)} |"
        )
    else:
        arm = _arms(results)[0]
        lines = [
            f"| setting | tag | n | {arm} peak | peak iteration | iters to peak − 0.5 dB | stop iteration | "
            "stop PSNR |",
            "|" + "---|" * 8,
        ]
        for name, s in by_setting.items():
            lines.append(
                f"| {name} | {s.get('tag') or ''} | {s['n_cases']} | "
                f"{_fmt(s.get(f'{arm}_peak_psnr_median'))} | "
                f"{_iters(s.get(f'{arm}_peak_iteration_median'))} | "
                f"{_iters(s.get('iterations_to_target_random_median'))} | "
                f"{_iters(s.get(f'{arm}_stop_iteration_median'))} | "
                f"{_fmt(s.get(f'{arm}_stop_psnr_median'))} |"
            )
    return lines


def _baseline_table(results: dict) -> list[str]:
    """Per setting: each DIP arm's peak, its peak with the classic EMA 0.99 of outputs, its PSNR at the
    no-ground-truth stop, and every classical method of the family (blank where a family has none)."""
    by_setting = results["summary"]["by_setting"]
    names = list(dict.fromkeys(n for s in by_setting.values() for n in (s.get("baselines_median") or {})))
    arms = _arms(results)
    columns = [f"DIP {a} peak | {a} EMA 0.99 peak | {a} @ stop" for a in arms]
    header = "| setting | " + " | ".join(columns + [n.replace("_", " ") for n in names]) + " |"
    lines = [header, "|" + "---|" * (1 + 3 * len(arms) + len(names))]
    for setting, s in by_setting.items():
        base = s.get("baselines_median") or {}
        cells = []
        for a in arms:
            cells += [
                _fmt(s.get(f"{a}_peak_psnr_median")),
                _fmt(s.get(f"{a}_peak_psnr_ema99_median")),
                _fmt(s.get(f"{a}_stop_psnr_median")),
            ]
        cells += ["" if base.get(n) is None else _fmt(base.get(n)) for n in names]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return lines


def _frontier_table(results: dict) -> list[str]:
    """Per setting and δ: median iterations (seconds) each arm needs to first reach random's peak − δ."""
    lines = [
        "| setting | δ (dB) | random: iterations (s) | meta: iterations (s) | speedup median | meta reached |",
        "|---|---|---|---|---|---|",
    ]
    any_row = False
    for setting, s in results["summary"]["by_setting"].items():
        for delta, f in (s.get("frontier") or {}).items():
            any_row = True
            lines.append(
                f"| {setting} | {delta} | {_iters(f.get('iterations_random_median'))} "
                f"({_fmt(f.get('seconds_random_median'), 1)}) | {_iters(f.get('iterations_meta_median'))} "
                f"({_fmt(f.get('seconds_meta_median'), 1)}) | ×{_fmt(f.get('speedup_median'), 1)} | "
                f"{_fmt(100 * (f.get('meta_reached_fraction') or 0), 0)}% |"
            )
    return lines if any_row else []


def _budget_text(config: dict) -> str:
    caps = ", ".join(map(str, config["iterations"]))
    options = config.get("options") or {}
    if options.get("converge"):
        return (
            f"each arm runs until its PSNR has passed its peak — stopped after max({options.get('patience')}, "
            f"{options.get('patience_fraction')} × iterations so far) iterations without a gain of 0.01 dB — "
            f"or a cap of {caps} iterations (runs that hit the cap while improving are flagged ⚠); PSNR every "
            f"iteration, SSIM every iteration up to 500 then every {options.get('ssim_every', 1)}th"
        )
    return f"budget {caps} iterations (fixed; PSNR/SSIM recorded every iteration)"


def arms_sentence(config: dict, arms: list[str]) -> str:
    """The report's first line on what was compared: the init (called meta-learned only when it had meta-steps;
    a 0-step export such as offset-inpaint is PyTorch's init around an estimate) against random init."""
    init = config.get("init", {})
    if "meta" not in arms:
        return (
            f"Random init only (`{config.get('random', {}).get('arch')}`, the DIP paper's recipe): "
            "no meta-learned init was given."
        )
    kind = "Init (not meta-learned: 0 meta-steps)" if init.get("meta_steps") == 0 else "Meta-learned init"
    return (
        f"{kind} **{init.get('name')}** (sha256 `{str(init.get('sha256'))[:16]}…`; "
        f"{init.get('card') or ''}; network `{(init.get('arch') or {}).get('name', 'custom')}`) against random "
        f"init (`{config.get('random', {}).get('arch') or 'same network'}`, the DIP paper's recipe), each with "
        "its own recipe, on the same measurements."
    )


def write_markdown(results: dict, out: Path, figures: dict) -> Path:
    config = results["config"]
    arms = config.get("arms", _arms(results))
    lines = [f"# Evaluation: {config.get('name', 'evaluate')}", ""]
    if config.get("description"):
        lines += [config["description"], ""]
    lines.append(arms_sentence(config, arms))
    lines += [
        "",
        f"Images: {', '.join(config.get('images', []))}; sizes "
        f"{', '.join(f'{s} px' for s in config.get('sizes', []))};"
        f" seeds {', '.join(map(str, config.get('seeds', [])))}; "
        + _budget_text(config)
        + "; watched stopping rule "
        f"`{config.get('stop_rule')}` (no ground truth). Device {config.get('device')}, "
        f"{config.get('threads')} threads"
        + (f" × {config['jobs']} parallel jobs" if config.get("jobs", 1) > 1 else "")
        + f"; {config.get('date')}.",
        "",
        f"Re-run: `{config.get('command')}`",
        "",
    ]
    for note in config.get("notes", []):
        lines.append(f"> {note}")
    lines += [
        "",
        "## Summary",
        "",
        "PSNR in dB (medians over images × seeds). *Target* = random init's peak − "
        f"{config.get('margin_db', 0.5)} dB; *speedup* = iterations random needs to first reach it "
        f"÷ iterations"
        " meta needs (0 when meta never does); Δ = meta − random; *stop* = the output of the no-ground-truth "
        "rule.",
        "",
    ]
    lines += _summary_table(results)
    lines += [""]
    baseline_lines = _baseline_table(results)
    if baseline_lines:
        lines += [
            "## Against classical methods and DIP's own EMA",
            "",
            "Median PSNR (dB) on the same measurements. Each DIP arm: its peak, the peak of the classic EMA of "
            "outputs (weight 0.99; the random arm's own recipe), and its output at the no-ground-truth stop. "
            "Classical methods (`metadip/baselines.py`): TV (weight 0.75·σ/255) and BM3D for denoising, "
            "biharmonic filling for inpainting, bicubic and Tikhonov for super-resolution, Tikhonov "
            "(Wiener-type, ‖∇x‖² prior) for deblurring, zero-filled and TV-regularised least squares for "
            "Fourier; λ / TV weight picked with the clean image from a small grid (oracle: flatters them).",
            "",
        ]
        lines += baseline_lines + [""]
    frontier_lines = _frontier_table(results)
    if frontier_lines:
        lines += [
            "## Speed–quality frontier",
            "",
            "Median iterations (and seconds) each arm needs to first reach random init's peak − δ; never "
            "counts as infinite in the median (shown as *never*). The 0.5 dB row is the headline speedup. Seconds "
            "include each run's setup (network and z — a classical estimate in z is computed there).",
            "",
        ]
        if "frontier" in figures:
            lines += [f"![speed-quality frontier]({figures['frontier'].name})", ""]
        lines += frontier_lines + [""]
    lines += ["## Convergence", "", f"![PSNR vs iteration]({figures['curves'].name})", ""]
    lines += [f"- {sentence}" for sentence in curves_reading(results)]
    lines += [""]
    if "speedup" in figures:
        lines += [
            "## Speedup",
            "",
            f"![speedup per setting]({figures['speedup'].name})",
            "",
            speedup_reading(results),
            "",
        ]
    elif "convergence" in figures:
        lines += [
            "## Iterations to converge",
            "",
            f"![iterations to target]({figures['convergence'].name})",
            "",
            "Without a meta-learned init there is no speedup to show; the figure gives the iteration budget "
            "random init needs, the quantity a meta init has to beat.",
            "",
        ]
    lines += ["## Reconstructions", ""]
    for setting in settings(results):
        figure = figures.get(f"grid:{setting}")
        if figure is None:
            continue
        lines += [
            f"### {setting}",
            "",
            f"![{setting}]({figure.name})",
            "",
            grid_reading(results, setting),
            "",
        ]
    lines += [
        "## Spectral view",
        "",
        "Radially averaged power spectrum of the reconstruction at a few iterations against the "
        "clean image and "
        "the measurement (top), and the relative error ‖F(x̂) − F(x)‖/‖F(x)‖ in each radial frequency band "
        "over iterations (bottom; log-spaced columns) — which frequencies each init gets right, and when.",
        "",
    ]
    for setting in settings(results):
        figure = figures.get(f"spectral:{setting}")
        if figure is None:
            continue
        lines += [
            f"### {setting}",
            "",
            f"![spectral view {setting}]({figure.name})",
            "",
            spectral_reading(results, setting),
            "",
        ]
    versions = config.get("versions", {})
    lines += [
        "## Configuration",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform") + ".",
        f"Platform: {versions.get('platform', '?')}.",
        "",
        "Files: `results.json` (every curve; keys documented in `metadip/evaluation/__init__.py`), `results.csv` "
        "(one row per case), `config.toml` (re-run with `metadip evaluate --config config.toml`), `images/`, "
        "`cases/` (the resume cache).",
        "",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
