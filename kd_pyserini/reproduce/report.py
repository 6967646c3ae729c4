"""The leaderboard ``kd-repro`` writes: ``leaderboard.md`` (conditions, scores, commands), ``leaderboard.json``,
``commands.log`` and, through :mod:`kd_pyserini.reproduce.plot`, ``efficiency.png``."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kd_pyserini.atomic import atomic_write
from kd_pyserini.reproduce.matrix import Matrix
from kd_pyserini.reproduce.plot import plot_efficiency
from kd_pyserini.reproduce.verdicts import (ERROR, FAIL, NO_REFERENCE, NOT_CHECKABLE, NOT_RUNNABLE, PASS, Result,
                                            Row)

__all__ = ["leaderboard_markdown", "leaderboard_json", "write_leaderboard", "FAMILY_FILE"]

#: a ``tools/experiments/family_distill.py`` result in kd-repro's output folder: drawn into ``efficiency.png``.
FAMILY_FILE = "family.json"


def _f(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if signed:
        return "±0.0000" if abs(x) < 0.00005 else f"{x:+.4f}"
    return f"{x:.4f}"


def _verdict_text(row: Row) -> str:
    if row.verdict == PASS:
        return f"yes (±{row.tolerance:g})"
    if row.verdict == FAIL:
        return f"**NO** (±{row.tolerance:g})"
    if row.verdict == NOT_CHECKABLE:
        return f"not checkable: {row.detail}"
    if row.verdict == NO_REFERENCE:
        return "no published figure (measured only)"
    if row.verdict == NOT_RUNNABLE:
        return f"not runnable: {row.detail}"
    return f"error: {row.detail}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _machine() -> str:
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the end (latencies are inflated on a busy machine)"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, "
            f"Python {platform.python_version()}{load}")


_STATUS_TEXT = {PASS: "reproduced", FAIL: "**outside tolerance**", NO_REFERENCE: "measured (no published figure)",
                NOT_RUNNABLE: "not runnable", ERROR: "**error**"}


def leaderboard_markdown(results: Sequence[Result]) -> str:
    """The leaderboard as Markdown: a summary per condition, then one row per (condition, measure)."""
    lines = ["# kd_pyserini reproduction leaderboard", "",
             f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `kd-repro` on: {_machine()}.",
             "",
             "Verdicts: *yes* = measured within the tolerance of the published figure; *NO* = outside it; "
             "*not checkable* = the run cannot compute that measure (a top-100 run and a depth-1000 measure); "
             "*not runnable* = an input is missing here (never counted as passed); *no published figure* = measured "
             "only. Measures follow ir_measures names (`RR(rel=2)@10` = `trec_eval -l 2 -M 10 -m recip_rank`), "
             "means over all judged queries (`trec_eval -c`).", ""]
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, NO_REFERENCE, NOT_RUNNABLE, ERROR)}
    lines += [f"**{len(results)} conditions: {counts[PASS]} reproduced, {counts[FAIL]} outside tolerance, "
              f"{counts[NO_REFERENCE]} measured without a published figure, {counts[ERROR]} failed to run, "
              f"{counts[NOT_RUNNABLE]} not runnable here.**", "", "## Conditions", "",
              "| benchmark | condition | status | latency (ms/query) | run file / what is missing |",
              "|:---|:---|:---|---:|:---|"]
    for r in results:
        status = _STATUS_TEXT.get(r.status, r.status)
        what = "; ".join(r.problems) if r.status in (NOT_RUNNABLE, ERROR) else (r.run_file or "")
        lat = f"{r.latency_ms:.1f}" if r.latency_ms is not None else ""
        lines.append(f"| {r.condition.benchmark} | {_md_escape(r.condition.name)} | {status} | {lat} | "
                     f"{_md_escape(what)} |")
    lines += ["", "## Scores", "",
              "| benchmark | condition | measure | expected | measured | delta | within tolerance | source |",
              "|:---|:---|:---|---:|---:|---:|:---|:---|"]
    for r in results:
        for row in r.rows:
            lines.append(f"| {row.benchmark} | {_md_escape(row.condition)} | `{row.measure}` | {_f(row.expected)} | "
                         f"{_f(row.measured)} | {_f(row.delta, signed=True)} | {_md_escape(_verdict_text(row))} | "
                         f"{_md_escape(row.source or '')} |")
    lat_notes = sorted({r.latency_source for r in results if r.latency_source})
    if lat_notes:
        lines += ["", "Latency: " + "; ".join(lat_notes) + "."]
    cmds = [r for r in results if r.commands]
    if cmds:
        lines += ["", "## Commands", ""]
        for r in cmds:
            lines.append(f"- `{r.condition.key}`:")
            lines += [f"  `{_md_escape(c)}`" + ("  " if j < len(r.commands) - 1 else "")
                      for j, c in enumerate(r.commands)]
    return "\n".join(lines) + "\n"


def leaderboard_json(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The leaderboard as JSON-able records (one per condition, with its rows)."""
    out = []
    for r in results:
        out.append({
            "benchmark": r.condition.benchmark, "condition": r.condition.name, "display": r.condition.display,
            "type": r.condition.type, "status": r.status, "run_file": r.run_file, "problems": r.problems,
            "commands": r.commands, "latency_ms": r.latency_ms, "latency_source": r.latency_source,
            "wall_s": r.wall_s, "n_queries": r.n_queries,
            "rows": [{"measure": w.measure, "expected": w.expected, "measured": w.measured, "delta": w.delta,
                      "tolerance": w.tolerance, "source": w.source, "verdict": w.verdict, "detail": w.detail}
                     for w in r.rows]})
    return out


def write_leaderboard(results: Sequence[Result], matrices: Sequence[Matrix], output_dir: str | os.PathLike,
                      plot: bool = True, family: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.json``, ``commands.log`` (when a command ran) and (``plot``)
    ``efficiency.png`` into ``output_dir``; their paths by kind (``markdown``, ``json``, ``log``, ``plot``).
    ``family``: a ``family.json`` of ``tools/experiments/family_distill.py``, drawn as one more panel [default:
    ``output_dir/family.json`` when it exists, so ``kd-repro -o DIR`` draws the one copied there]."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "leaderboard.md", "json": out / "leaderboard.json"}
    with atomic_write(paths["markdown"]) as f:
        f.write(leaderboard_markdown(results))
    with atomic_write(paths["json"]) as f:
        json.dump(leaderboard_json(results), f, indent=2)
        f.write("\n")
    logs = [r for r in results if r.log]
    if logs:
        with atomic_write(out / "commands.log") as f:
            for r in logs:
                f.write(f"### {r.condition.key}\n{r.log}\n")
        paths["log"] = out / "commands.log"
    if family is None and (out / FAMILY_FILE).is_file():
        family = out / FAMILY_FILE
    if plot:
        paths["plot"] = plot_efficiency(results, matrices, out / "efficiency.png", family=family)
    return paths
