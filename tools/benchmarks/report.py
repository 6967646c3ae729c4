"""Text and Markdown renderings of a benchmark report (no kd_pyserini import: the Markdown generator and the tests
use them without starting a JVM)."""

from __future__ import annotations


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if 0.01 <= abs(x) < 1:
        return f"{x:.{max(digits, 4)}f}"
    return f"{x:.{digits}f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"


def _peer_names(b: dict) -> list[str]:
    return list(dict.fromkeys(k for r in b.get("rows", []) for k in (r.get("peers") or {})))


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def _pct(v: float | None) -> str:
    return f"{100 * v:.0f}%" if v is not None and v >= 0.01 else ("-" if v is None else f"{100 * v:.1f}%")


def format_machine(m: dict) -> str:
    """The CPU's kind, what was forced, and its measured GEMM ceilings, as two lines."""
    k = m.get("cpu_kind") or {}
    c = m.get("ceilings") or {}
    forced = ", ".join(f"{a}={v}" for a, v in (k.get("forced") or {}).items())
    gf = ", ".join(f"{p} {v:.0f}" if v else f"{p} -" for p, v in (c.get("gflops") or {}).items())
    return (f"== machine: {m.get('cpu_model')}, {m.get('cpus')} CPUs, kind: {k.get('kind')} (torch dispatch "
            f"{k.get('torch_capability')}{'; forced: ' + forced if forced else ''}); load {m.get('load_avg')}\n"
            f"   GEMM ceiling {'x'.join(map(str, c.get('shape', [])))}, GFLOP/s: {gf}")


def format_result(b: dict) -> str:
    """A benchmark's rows as a fixed-width table (metric | kd_pyserini | Pyserini | ratio | peers | ceiling | unit)."""
    lines = [f"== {b['name']} ({b['seconds']:.0f} s)"]
    if b.get("skipped"):
        lines.append(f"   skipped: {b['skipped']}")
        return "\n".join(lines)
    w = max([len(r["metric"]) for r in b["rows"]] + [10])
    peers = _peer_names(b)
    head = "".join(f"  {'x ' + ('ST' if p == 'sentence-transformers' else p):>8}" for p in peers)
    lines.append(f"   {'metric':<{w}}  {'kd_pyserini':>12}  {'Pyserini':>12}  {'ratio':>7}{head}  {'ceil':>5}  unit")
    for r in b["rows"]:
        extra = "".join(f"  {_x((r.get('ratios') or {}).get(p)):>8}" for p in peers)
        lines.append(f"   {r['metric']:<{w}}  {_fmt(r['ours']):>12}  {_fmt(r['pyserini']):>12}  {_x(r['ratio']):>7}"
                     f"{extra}  {_pct(r.get('ceiling')):>5}  "
                     f"{r['unit']}{('  (' + r['note'] + ')') if r.get('note') else ''}")
    for k, v in b.get("agreement", {}).items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk} {_fmt(vv, 6) if isinstance(vv, float) else vv}" for kk, vv in v.items())
        lines.append(f"   agreement {k}: {v}")
    for n in b.get("notes", []):
        lines.append(f"   note: {n}")
    return "\n".join(lines)


def to_markdown(report: dict) -> str:
    """The report as Markdown tables (what PERFORMANCE.md pastes), one per benchmark."""
    m = report["machine"]
    out = [f"Machine: {m.get('cpu_model')}, {m.get('cpus')} CPUs ({', '.join(m.get('cpu_flags', []))}), "
           f"{m.get('mem_gib')} GiB; torch {m.get('torch')} ({m.get('torch_threads')} threads), faiss "
           f"{m.get('faiss')}, pyserini {m.get('pyserini')}; {m.get('date')}; load average at start "
           f"{m.get('load_avg')}, at end {m.get('load_avg_end')}.", ""]
    for b in report["benchmarks"].values():
        out.append(f"#### {b['name']} ({b['seconds']:.0f} s)")
        out.append("")
        if b.get("skipped"):
            out += [f"Skipped: {b['skipped']}", ""]
            continue
        peers = _peer_names(b)
        ceil = any(r.get("ceiling") is not None for r in b["rows"])
        out.append("| metric | kd_pyserini | Pyserini | ratio | " + "".join(f"x {p} | " for p in peers)
                   + ("of ceiling | " if ceil else "") + "unit |")
        out.append("|---|---:|---:|---:|" + "---:|" * (len(peers) + ceil) + "---|")
        for r in b["rows"]:
            ratio = f"**{r['ratio']:.2f}x**" if r["ratio"] is not None else "-"
            unit = r["unit"] + (f" ({r['note']})" if r.get("note") else "")
            cells = "".join(f"{_x((r.get('ratios') or {}).get(p))} | " for p in peers)
            cells += f"{_pct(r.get('ceiling'))} | " if ceil else ""
            out.append(f"| {r['metric']} | {_fmt(r['ours'], 3)} | {_fmt(r['pyserini'], 3)} | {ratio} | {cells}{unit} |")
        out.append("")
        for k, v in b.get("agreement", {}).items():
            if isinstance(v, dict):
                v = ", ".join(f"{kk} {_fmt(vv, 5) if isinstance(vv, float) else vv}" for kk, vv in v.items())
            elif isinstance(v, float):
                v = _fmt(v, 4)
            out.append(f"- agreement, {k}: {v}")
        for n in b.get("notes", []):
            out.append(f"- {n}")
        out.append("")
    return "\n".join(out)
