"""Speed of one DIP iteration (forward + MSE loss + backward + Adam step, batch 1, RGB) per generator preset.

    python evaluate/bench_speed.py                 # writes evaluate/results/speed.json and speed.md
    python evaluate/bench_speed.py --quick         # a few iterations only (smoke test)

Measures every preset at 64, 128 and 256 px on the CPU (and CUDA when available), in the default
(NCHW) and channels_last (NHWC) memory formats; reports the median of N timed iterations after warm-up.
It also compares our "skip" preset with an independent, plain ``nn.Sequential`` / ``Concat`` rebuild of the
reference DIP skip net (the way ``models/skip.py`` of the deep-image-prior repository assembles it), given the
same weights and input: outputs must agree and ours must be no slower.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from metadip.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from metadip.generators import (  # noqa: E402
    PRESETS,
    build_generator,
    count_parameters,
    default_input_recipe,
    make_input,
    prepare_for_speed,
)

# --------------------------------------------------------------------------------------------------------
# Reference architecture, rebuilt the plain way: nested nn.Sequential blocks and a Concat module that crops
# its inputs to a common size. Padding layers are separate ReflectionPad2d modules (also the no-op one in
# front of every 1×1 conv), BatchNorm is PyTorch's default (it tracks running statistics), LeakyReLU is
# in place. Used only here and in the tests, as an independent check of metadip.generators.skip.
# --------------------------------------------------------------------------------------------------------


class Concat(nn.Module):
    def __init__(self, dim: int, *branches: nn.Module) -> None:
        super().__init__()
        self.dim = dim
        for i, branch in enumerate(branches):
            self.add_module(str(i), branch)

    def forward(self, x):
        outs = [branch(x) for branch in self._modules.values()]
        h = min(o.shape[2] for o in outs)
        w = min(o.shape[3] for o in outs)
        cropped = []
        for o in outs:
            dh, dw = (o.shape[2] - h) // 2, (o.shape[3] - w) // 2
            cropped.append(o[:, :, dh : dh + h, dw : dw + w])
        return torch.cat(cropped, dim=self.dim)


def _ref_conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.ReflectionPad2d((k - 1) // 2), nn.Conv2d(cin, cout, k, stride, padding=0, bias=True)
    )


def _ref_act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def reference_skip(
    in_ch: int = 32,
    out_ch: int = 3,
    down=(128,) * 5,
    up=(128,) * 5,
    skip=(4,) * 5,
    upsample_mode: str = "bilinear",
) -> nn.Sequential:
    """The DIP skip net as the reference repository assembles it (reflection padding, stride-2 down)."""
    model = nn.Sequential()
    current = model
    depth_in = in_ch
    n = len(down)
    for i in range(n):
        deeper = nn.Sequential()
        branch = nn.Sequential()
        current.append(Concat(1, branch, deeper) if skip[i] else deeper)
        current.append(nn.BatchNorm2d(skip[i] + (up[i + 1] if i < n - 1 else down[i])))
        if skip[i]:
            branch.append(_ref_conv(depth_in, skip[i], 1))
            branch.append(nn.BatchNorm2d(skip[i]))
            branch.append(_ref_act())
        deeper.append(_ref_conv(depth_in, down[i], 3, 2))
        deeper.append(nn.BatchNorm2d(down[i]))
        deeper.append(_ref_act())
        deeper.append(_ref_conv(down[i], down[i], 3))
        deeper.append(nn.BatchNorm2d(down[i]))
        deeper.append(_ref_act())
        inner = nn.Sequential()
        if i < n - 1:
            deeper.append(inner)
            k = up[i + 1]
        else:
            k = down[i]
        deeper.append(nn.Upsample(scale_factor=2, mode=upsample_mode))
        current.append(_ref_conv(skip[i] + k, up[i], 3))
        current.append(nn.BatchNorm2d(up[i]))
        current.append(_ref_act())
        current.append(_ref_conv(up[i], up[i], 1))
        current.append(nn.BatchNorm2d(up[i]))
        current.append(_ref_act())
        depth_in = down[i]
        current = inner
    model.append(_ref_conv(up[0], out_ch, 1))
    model.append(nn.Sigmoid())
    return model


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters in registration order (our skip net registers them in the reference's order)."""
    src_params, dst_params = list(src.parameters()), list(dst.parameters())
    if len(src_params) != len(dst_params):
        raise RuntimeError(f"parameter lists differ in length: {len(src_params)} vs {len(dst_params)}")
    with torch.no_grad():
        for a, b in zip(src_params, dst_params, strict=True):
            if a.shape != b.shape:
                raise RuntimeError(f"parameter shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
            b.copy_(a)


# --------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DipStepper:
    """One network + input + target + Adam; ``step()`` runs one DIP iteration and returns its seconds."""

    def __init__(
        self,
        net: nn.Module,
        z: torch.Tensor,
        size: tuple[int, int],
        device: torch.device,
        channels_last: bool,
        seed: int = 0,
        call_with_size: bool = True,
        **adam,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.net, self.z = prepare_for_speed(net, z, device, channels_last=channels_last)
        nhwc = not self.z.is_contiguous() and self.z.is_contiguous(memory_format=torch.channels_last)
        self.memory_format = "channels_last" if nhwc else "contiguous"
        target = torch.rand((1, 3, *size), generator=gen).to(device)
        self.y = target.contiguous(memory_format=torch.channels_last) if nhwc else target
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.01, **adam)
        self.size = size
        self.device = device
        self.call_with_size = call_with_size

    def step(self) -> float:
        _sync(self.device)
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        out = self.net(self.z, size=self.size) if self.call_with_size else self.net(self.z)
        loss = torch.mean((out - self.y) ** 2)
        loss.backward()
        self.opt.step()
        _sync(self.device)
        return time.perf_counter() - start


def timed(steppers: list[DipStepper], iterations: int, warmup: int) -> list[dict]:
    """Warm each stepper up, then interleave their timed iterations (fair on a shared, drifting machine)."""
    for s in steppers:
        for _ in range(warmup):
            s.step()
    times: list[list[float]] = [[] for _ in steppers]
    for _ in range(iterations):
        for i, s in enumerate(steppers):
            times[i].append(s.step())
    stats = []
    for t in times:
        ms = sorted(1000.0 * v for v in t)
        q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) >= 2 else [ms[0], ms[0], ms[0]]
        stats.append(
            {
                "ms_median": round(statistics.median(ms), 2),
                "ms_q1": round(q[0], 2),
                "ms_q3": round(q[2], 2),
                "ms_min": round(ms[0], 2),
                "iterations": len(ms),
            }
        )
    return stats


def iterations_for(arch: str, size: int, quick: bool) -> int:
    if quick:
        return 2
    if size <= 64:
        return 40
    if size <= 128:
        return 20 if arch == "skip" else 30
    return 6 if arch == "skip" else 12


def bench_presets(device: torch.device, sizes: list[int], quick: bool) -> list[dict]:
    rows = []
    for arch in PRESETS:
        for size in sizes:
            net0 = build_generator(arch, out_channels=3)
            z0 = make_input(default_input_recipe(net0), net0.input_shape(size, size))
            steppers = []
            for cl in (False, True):
                net = build_generator(net0.config)
                net.load_state_dict(net0.state_dict())
                steppers.append(DipStepper(net, z0.clone(), (size, size), device, channels_last=cl))
            stats = timed(steppers, iterations_for(arch, size, quick), warmup=1 if quick else 3)
            for cl, st in zip((False, True), stats, strict=True):
                row = {
                    "arch": arch,
                    "device": device.type,
                    "size": size,
                    "memory_format": "channels_last" if cl else "contiguous",
                    "params": count_parameters(net0),
                    **st,
                }
                rows.append(row)
                print(
                    f"{arch:13s} {device.type:4s} {size:4d}px {row['memory_format']:14s} "
                    f"{st['ms_median']:9.2f} ms/iter",
                    flush=True,
                )
    return rows


def bench_reference(device: torch.device, sizes: list[int], quick: bool) -> list[dict]:
    """Ours vs the plain reference rebuild, same weights and input, both NCHW; plus ours as
    ``prepare_for_speed`` sets it up (channels_last where it helps), timed interleaved with both."""
    rows = []
    for size in sizes:
        ours = build_generator("skip", out_channels=3)
        ref = reference_skip()
        copy_weights(ours, ref)
        fast = build_generator(ours.config)
        fast.load_state_dict(ours.state_dict())
        z = make_input(default_input_recipe(ours), ours.input_shape(size, size))
        with torch.no_grad():
            diff = (ours(z) - ref(z)).abs().max().item()
        s_ours = DipStepper(ours, z.clone(), (size, size), device, channels_last=False)
        s_ref = DipStepper(ref, z.clone(), (size, size), device, channels_last=False, call_with_size=False)
        s_fast = DipStepper(fast, z.clone(), (size, size), device, channels_last=None)
        n = 2 if quick else (30 if size <= 64 else 14)
        st_ours, st_ref, st_fast = timed([s_ours, s_ref, s_fast], n, warmup=1 if quick else 3)
        ratio = st_ours["ms_median"] / st_ref["ms_median"]
        rows.append(
            {
                "size": size,
                "device": device.type,
                "ours_ms": st_ours["ms_median"],
                "reference_ms": st_ref["ms_median"],
                "ratio_ours_over_reference": round(ratio, 3),
                "ours_prepared_ms": st_fast["ms_median"],
                "ours_prepared_memory_format": s_fast.memory_format,
                "ratio_ours_prepared_over_reference": round(st_fast["ms_median"] / st_ref["ms_median"], 3),
                "ours_min_ms": st_ours["ms_min"],
                "reference_min_ms": st_ref["ms_min"],
                "ours_prepared_min_ms": st_fast["ms_min"],
                "ratio_ours_over_reference_min": round(st_ours["ms_min"] / st_ref["ms_min"], 3),
                "iterations": n,
                "max_abs_output_diff": diff,
                "params_ours": count_parameters(ours),
                "params_reference": count_parameters(ref),
            }
        )
        print(
            f"skip vs reference {size}px: ours {st_ours['ms_median']:.1f} ms, reference "
            f"{st_ref['ms_median']:.1f} ms, ratio {ratio:.3f}, ours prepared ({s_fast.memory_format}) "
            f"{st_fast['ms_median']:.1f} ms, max |diff| {diff:.2e}",
            flush=True,
        )
    return rows


def bench_adam(device: torch.device, quick: bool) -> list[dict]:
    """The optimiser step is a visible share of a small net's iteration on CPU: compare Adam variants."""
    variants = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    net0 = build_generator("skip-slim")
    z0 = make_input(default_input_recipe(net0), net0.input_shape(64, 64))
    steppers = []
    for kw in variants.values():
        net = build_generator(net0.config)
        net.load_state_dict(net0.state_dict())
        steppers.append(DipStepper(net, z0.clone(), (64, 64), device, channels_last=False, **kw))
    stats = timed(steppers, 2 if quick else 40, warmup=1 if quick else 3)
    rows = [
        {"arch": "skip-slim", "size": 64, "device": device.type, "adam": name, **st}
        for name, st in zip(variants, stats, strict=True)
    ]
    for r in rows:
        print(f"skip-slim 64px adam={r['adam']:8s} {r['ms_median']:.1f} ms/iter", flush=True)
    return rows


def machine_info() -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": cores,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    return info


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Generator speed: ms per DIP iteration",
        "",
        "One iteration = forward + MSE loss + backward + Adam step (lr 0.01), batch 1, RGB output, input "
        "z = U(0, 0.1). Median over the timed iterations after warm-up (interquartile range in "
        "brackets); configurations that are compared were timed interleaved, iteration by iteration.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPU cores, torch {m['torch']} ({m['torch_threads']} "
        f"threads), Python {m['python']}, CUDA: {m['cuda'] or 'none'}. Date: {m['date']}. "
        f"Command: `{report['settings']['command']}`.",
        "",
        "Note: the machine was shared with other processes (other engineers' tests and experiments) while "
        f"this ran: 1/5/15-minute load averages {m.get('load_average_at_start')} at the start and "
        f"{m.get('load_average_at_end')} at the end, on {m['cpu_count']} cores. Absolute times therefore "
        "depend on that load; ratios between configurations timed interleaved (channels_last vs NCHW, ours "
        "vs reference, Adam variants) are the reliable part.",
        "",
        "Per-iteration speed only; the fixed cost of starting a `metadip reconstruct` (importing torch, ...) is "
        "measured in [startup.md](startup.md).",
        "",
    ]
    if report["settings"].get("note"):
        lines += [report["settings"]["note"], ""]
    for device in sorted({r["device"] for r in report["presets"]}):
        lines += [
            f"## Presets on {device}",
            "",
            "| preset | params | size | NCHW ms/iter | channels_last ms/iter | channels_last speed-up "
            "| NCHW min | channels_last min |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows = [r for r in report["presets"] if r["device"] == device]
        for arch in PRESETS:
            for size in sorted({r["size"] for r in rows}):
                pair = {r["memory_format"]: r for r in rows if r["arch"] == arch and r["size"] == size}
                if len(pair) != 2:
                    continue
                a, b = pair["contiguous"], pair["channels_last"]
                lines.append(
                    f"| {arch} | {a['params']:,} | {size} | {a['ms_median']:.1f} "
                    f"[{a['ms_q1']:.1f}–{a['ms_q3']:.1f}] | {b['ms_median']:.1f} "
                    f"[{b['ms_q1']:.1f}–{b['ms_q3']:.1f}] | {a['ms_median'] / b['ms_median']:.2f}× "
                    f"| {a['ms_min']:.1f} | {b['ms_min']:.1f} |"
                )
        lines.append("")
    lines += [
        "## Our `skip` preset against a plain rebuild of the reference skip net",
        "",
        "Same weights, same input, NCHW, default Adam. The reference is rebuilt inside the script the way "
        "the deep-image-prior repository assembles it (nested `nn.Sequential`, `Concat`, separate "
        "`ReflectionPad2d` layers, default `BatchNorm2d`, in-place LeakyReLU).",
        "",
        "Times are medians; the fastest single iteration of each (min, the least disturbed by other "
        "processes) is given too.",
        "",
        "| device | size | ours ms/iter | reference ms/iter | ours / reference | ours / reference (min) "
        "| ours via prepare_for_speed | prepared / reference | max abs output diff "
        "| params (ours = reference) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["reference"]:
        lines.append(
            f"| {r['device']} | {r['size']} | {r['ours_ms']:.1f} | {r['reference_ms']:.1f} | "
            f"{r['ratio_ours_over_reference']:.3f} | {r['ratio_ours_over_reference_min']:.3f} "
            f"({r['ours_min_ms']:.1f} / {r['reference_min_ms']:.1f}) | {r['ours_prepared_ms']:.1f} "
            f"({r['ours_prepared_memory_format']}) | {r['ratio_ours_prepared_over_reference']:.3f} | "
            f"{r['max_abs_output_diff']:.1e} | "
            f"{r['params_ours']:,} = {r['params_reference']:,} |"
        )
    lines += ["", "## Adam variants (skip-slim, 64 px)", "", "| device | Adam | ms/iter |", "|---|---|---:|"]
    for r in report["adam"]:
        lines.append(
            f"| {r['device']} | {r['adam']} | {r['ms_median']:.1f} [{r['ms_q1']:.1f}–{r['ms_q3']:.1f}] |"
        )
    lines += ["", f"Total benchmark wall time: {report['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(ROOT / "evaluate" / "results"))
    parser.add_argument("--quick", action="store_true", help="2 iterations per configuration (smoke test)")
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice). On a CPU shared with other busy "
        "processes use 1: multi-threaded kernels then stall on each other and timings become erratic.",
    )
    parser.add_argument("--note", default="", help="a remark printed under the machine line of speed.md")
    parser.add_argument(
        "--render", action="store_true", help="only re-render speed.md (and the note) from speed.json"
    )
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if args.render:
        import json

        report = json.loads((out / "speed.json").read_text(encoding="utf-8"))
        if args.note:
            report["settings"]["note"] = args.note
            atomic_write_json(out / "speed.json", report)
        atomic_write_text(out / "speed.md", to_markdown(report))
        print(f"rendered {out / 'speed.md'}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ref_sizes = [s for s in sizes if s <= 128]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    torch.manual_seed(0)
    start = time.perf_counter()
    report: dict = {
        "machine": machine_info(),
        "settings": {
            "command": "python evaluate/bench_speed.py" + ("".join(" " + a for a in argv) if argv else ""),
            "note": args.note,
            "quick": args.quick,
            "sizes": sizes,
            "reference_sizes": ref_sizes,
            "optimizer": "Adam lr=0.01",
            "loss": "MSE",
            "batch": 1,
            "out_channels": 3,
        },
        "presets": [],
        "reference": [],
        "adam": [],
    }
    for device in devices:
        report["presets"] += bench_presets(device, sizes, args.quick)
        report["reference"] += bench_reference(device, ref_sizes, args.quick)
        report["adam"] += bench_adam(device, args.quick)
    report["seconds"] = round(time.perf_counter() - start, 1)
    try:
        report["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    atomic_write_json(out / "speed.json", report)
    atomic_write_text(out / "speed.md", to_markdown(report))
    print(f"wrote {out / 'speed.json'} and {out / 'speed.md'} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
