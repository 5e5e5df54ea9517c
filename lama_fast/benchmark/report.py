"""The reports of ``lama-fast bench``: markdown tables per suite and the end-to-end plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .plan import E2E_SYSTEMS


def _cell(value: Any, fmt: str, scale: float = 1.0) -> str:
    if value is None:
        return "—"
    return format(value * scale, fmt)


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def _mib(value: Optional[int]) -> str:
    return "—" if not value else f"{value / 2**20:.0f}"


def _machine_line(machine: Mapping[str, Any]) -> str:
    versions = ", ".join(f"{k} {machine[k]}" for k in ("torch", "openvino", "onnxruntime")
                         if machine.get(k) and machine[k] != "not installed")
    return (f"{machine.get('cpu', '?')}, {machine.get('threads', '?')} threads, CPU flags: "
            f"{machine.get('cpu_flags', '-')}; Python {machine.get('python', '?')}, {versions}")


def kernel_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The kernel suite as markdown: the measured rates, then one table row per (block, size, system)."""
    rows = [r for r in rows if r.get("suite") == "kernels"]
    if not rows:
        return ""
    rates: Dict[int, Mapping[str, Any]] = {}
    for r in rows:
        if r.get("sgemm_gflops") is not None:
            rates.setdefault(r["size"], r)
    parts = ["## Kernels (batch 1, float32)", ""]
    if rates:
        parts += [
            "Rates measured in this run at the spectral transform's conv1 shape (the roofline's denominators):",
            "",
            _markdown_table(
                ("spatial", "GEMM", "sgemm (torch.mm) GFLOP/s", "oneDNN 1x1 conv GFLOP/s", "rfft2+irfft2 (1x192) ms"),
                [(f"{s}x{s}", r["rate_gemm_shape"], f"{r['sgemm_gflops']:.0f}", f"{r['onednn_gflops']:.0f}",
                  f"{r['fft_s'] * 1e3:.2f}") for s, r in sorted(rates.items())]),
            "",
        ]
    table = []
    for r in rows:
        ok = r.get("status") == "ok"
        roofline = "—"
        if ok and r.get("roofline_sgemm_s"):
            roofline = (f"{r['roofline_sgemm_s'] * 1e3:.1f} / {r['roofline_onednn_s'] * 1e3:.1f} ms "
                        f"(×{r['x_roofline_sgemm']:.2f} / ×{r['x_roofline_onednn']:.2f})")
        extra = None
        if r.get("peak_rss_bytes") and r.get("rss_before_bytes"):
            extra = r["peak_rss_bytes"] - r["rss_before_bytes"]
        table.append((
            r.get("block", ""), r.get("shape", ""), r.get("system", ""),
            _cell(r.get("median_s"), ".2f", 1e3), _cell(r.get("spread_s"), ".2f", 1e3),
            _cell(r.get("first_call_s"), ".2f", 1e3), _mib(r.get("peak_rss_bytes")),
            "—" if extra is None else f"{extra / 2**20:+.0f}",
            _cell(r.get("max_abs_err"), ".1e"), _cell(r.get("max_abs_ref"), ".2g"),
            _ratio(r.get("speedup_vs_eager")), roofline, "ok" if ok else r.get("status", ""),
        ))
    parts.append(_markdown_table(
        ("block", "input", "system", "median ms", "spread ms", "first call ms", "peak RSS MiB", "calls' extra MiB",
         "max abs err vs f64", "max abs ref", "speed-up vs eager", "roofline sgemm / oneDNN (time ÷ roofline)",
         "status"), table))
    return "\n".join(parts)


def e2e_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The end-to-end suite as markdown: one table row per (system, size)."""
    rows = [r for r in rows if r.get("suite") == "e2e"]
    if not rows:
        return ""
    models = sorted({str(r.get("model")) for r in rows})
    table = []
    for r in sorted(rows, key=lambda r: (r.get("size") or 0, E2E_SYSTEMS.index(r["system"])
                                         if r.get("system") in E2E_SYSTEMS else 99)):
        ok = r.get("status") == "ok"
        within = "—"
        if r.get("u8_within1") is not None:
            within = f"{r['u8_within1'] * 100:.2f} / {r['u8_within2'] * 100:.2f}"
        table.append((
            r.get("system", ""), f"{r.get('size')}²", r.get("dtype", ""), _cell(r.get("build_s"), ".1f"),
            _cell(r.get("first_call_s"), ".2f"), _cell(r.get("median_s"), ".3f"), _cell(r.get("spread_s"), ".3f"),
            _ratio(r.get("speedup_vs_eager")), _ratio(r.get("speedup_vs_compile")),
            _mib(r.get("peak_rss_bytes")), _mib(r.get("rss_before_bytes")),
            _cell(r.get("max_abs_err"), ".1e"), _cell(r.get("output_std"), ".4f"),
            "—" if r.get("u8_max_diff") is None else str(r["u8_max_diff"]), within,
            "ok" if ok else r.get("status", ""),
        ))
    return "\n".join([
        f"## End to end ({', '.join(models)}, batch 1)",
        "",
        _markdown_table(
            ("system", "size", "dtype", "build s", "first call s", "median s", "spread s", "speed-up vs eager",
             "speed-up vs compile", "peak RSS MiB", "RSS after build MiB", "max abs err vs f64", "output std",
             "uint8 max diff", "uint8 ≤1 / ≤2 levels %", "status"), table),
    ])


def markdown_report(rows: Sequence[Mapping[str, Any]], title: str = "lama_fast CPU benchmarks") -> str:
    """A markdown report of rows: the machine, then a table per suite."""
    machines = []
    for r in rows:
        line = _machine_line(r.get("machine") or {})
        if line not in machines:
            machines.append(line)
    runs = sorted({str(r.get("run_id")) for r in rows if r.get("run_id")})
    repeats = sorted({(r.get("repeats"), r.get("warmup")) for r in rows if r.get("repeats")}, key=str)
    head = [f"# {title}", ""]
    head += [f"Machine: {m}." for m in machines]
    if runs:
        head.append(f"Run{'s' if len(runs) > 1 else ''}: {', '.join(runs)}; "
                    + "; ".join(f"{rep} timed runs after {w} warm-up call(s)" for rep, w in repeats) + ".")
    head += ["", "Times are comparable only within one run on one machine; speed-ups are computed from the "
             "same run. Column meanings: bench/README.md.", ""]
    sections = [s for s in (kernel_markdown(rows), e2e_markdown(rows)) if s]
    return "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"


def plot_e2e(rows: Sequence[Mapping[str, Any]], path: Union[str, Path]) -> bool:
    """Median time against resolution per system, log-log, to a PNG; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, List[Tuple[int, float]]] = {}
    for r in rows:
        if r.get("suite") == "e2e" and r.get("status") == "ok" and r.get("median_s"):
            series.setdefault(f"{r['system']} ({r.get('dtype')})", []).append((r["size"], r["median_s"]))
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    sizes = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s}²" for s in sizes])
    ax.set_xlabel("input resolution (pixels)")
    ax.set_ylabel("median time per call (s)")
    machine = next((r.get("machine") for r in rows if r.get("machine")), {}) or {}
    models = sorted({str(r.get("model")) for r in rows if r.get("suite") == "e2e" and r.get("model")})
    ax.set_title(f"LaMa generator ({', '.join(models) or '?'}), batch 1, {machine.get('cpu', 'CPU')} "
                 f"({machine.get('threads', '?')} threads)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True

