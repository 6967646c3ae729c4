"""The efficiency plot: query latency against the benchmark's primary measure, one panel per benchmark, in the
manner of the Margin-MSE paper's efficiency figure (``efficiency.png`` of ``kd-repro``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kd_pyserini.errors import KdError
from kd_pyserini.reproduce.matrix import Matrix
from kd_pyserini.reproduce.verdicts import Result

__all__ = ["plot_efficiency", "family_points", "FamilyFileError"]

_TYPE_MARKERS = {"bm25": "s", "dense": "o", "rerank": "^", "hybrid": "D", "reference-run": "*"}


#: markers of the architectures of ``tools/experiments/family_distill.py`` (one per re-ranker architecture).
_FAMILY_MARKERS = {"bert-dot": ("o", "#d62728", "BERT_Dot"), "colbert": ("P", "#ff7f0e", "ColBERT"),
                   "prettr": ("X", "#8c564b", "PreTTR"), "bert-cat": ("^", "#2ca02c", "BERT_CAT")}


class FamilyFileError(KdError, ValueError):
    """A family JSON (``tools/experiments/family_distill.py``) that cannot be read (one line: file and fix)."""


def family_points(family: Mapping[str, Any] | str | os.PathLike) -> list[tuple[float, float, str, str]]:
    """``(latency ms, nDCG@10 after training, label, architecture)`` per architecture of a ``family.json`` written by
    ``tools/experiments/family_distill.py``: the latency with precomputed passages where the architecture has them
    (BERT_Dot vectors, a ColBERT / PreTTR passage store), else without (BERT_CAT).

    Raises:
        FamilyFileError: not readable JSON, or no architecture with a latency and an nDCG@10 (one line).
    """
    import json

    where = str(family) if not isinstance(family, Mapping) else "the family results"
    if not isinstance(family, Mapping):
        try:
            family = json.loads(Path(family).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FamilyFileError(f"{where}: not a family JSON ({e}); give the family.json that "
                                  "tools/experiments/family_distill.py wrote") from None
    archs = family.get("architectures") if isinstance(family, Mapping) else None
    points = []
    for arch, r in (archs or {}).items():
        try:
            score = float(r["after"]["nDCG@10"])
            pre = r.get("latency_ms_precomputed")
            lat = float(pre if pre is not None else r["latency_ms"])
        except (KeyError, TypeError, ValueError):
            raise FamilyFileError(f"{where}: architecture {arch!r} has no after/nDCG@10 or latency_ms; rerun "
                                  "tools/experiments/family_distill.py") from None
        name = _FAMILY_MARKERS.get(arch, ("o", "k", arch))[2]
        how = "precomputed passages" if pre is not None else "no precomputation"
        points.append((lat, score, f"{name} ({how})", arch))
    if not points:
        raise FamilyFileError(f"{where}: no architectures; give the family.json that "
                              "tools/experiments/family_distill.py wrote")
    return points


def _family_extras(family: Mapping[str, Any] | str | os.PathLike) -> tuple[dict[str, float], float | None]:
    """From a family JSON (already checked by :func:`family_points`): nDCG@10 *before* training per architecture
    (where recorded) and the BM25 order's nDCG@10 (or ``None``)."""
    import json

    if not isinstance(family, Mapping):
        family = json.loads(Path(family).read_text(encoding="utf-8"))
    before = {}
    for arch, r in (family.get("architectures") or {}).items():
        try:
            before[arch] = float(r["before"]["nDCG@10"])
        except (KeyError, TypeError, ValueError):
            pass
    try:
        bm25 = float(family["bm25"]["nDCG@10"])
    except (KeyError, TypeError, ValueError):
        bm25 = None
    return before, bm25


def _family_panel(ax: Any, points: Sequence[tuple[float, float, str, str]], title: str,
                  before: Mapping[str, float] | None = None, bm25: float | None = None) -> None:
    """One marker per architecture at (latency, nDCG@10 after training); where the score before training is known, a
    hollow marker there and an arrow to the trained one; BM25's own order as a dotted line."""
    before = before or {}
    for lat, score, label, arch in points:
        marker, color, _ = _FAMILY_MARKERS.get(arch, ("o", "k", arch))
        ax.scatter([lat], [score], marker=marker, s=80, color=color, zorder=3, label=label)
        ax.annotate(f"{score:.4f}", (lat, score), textcoords="offset points", xytext=(7, 4), fontsize=8)
        if arch in before:
            ax.scatter([lat], [before[arch]], marker=marker, s=60, facecolors="none", edgecolors=color, zorder=3)
            ax.annotate("", xy=(lat, score), xytext=(lat, before[arch]), zorder=2,
                        arrowprops=dict(arrowstyle="->", color=color, lw=1.0, shrinkA=5, shrinkB=6))
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + [before[p[3]] for p in points if p[3] in before] + ([bm25] if bm25 is not None
                                                                                       else [])
    if bm25 is not None:
        ax.axhline(bm25, color="#1f77b4", ls=":", lw=1.4, zorder=1, label=f"BM25 order: {bm25:.4f}")
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 3, max(xs) * 5)
    pad = max(0.02, 0.12 * (max(ys) - min(ys)))
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("re-ranking latency (ms per query at depth 100, log scale)")
    ax.set_ylabel("nDCG@10")
    ax.grid(True, which="both", alpha=0.25)
    if before:
        ax.scatter([], [], marker="o", s=60, facecolors="none", edgecolors="#555555",
                   label="hollow: before training (arrow: after)")
    ax.legend(fontsize=7, loc="best")


def _points(results: Sequence[Result], matrices: Mapping[str, Matrix]) -> dict[str, dict[str, list[Any]]]:
    """Per benchmark: measured points (latency, score), published points with a latency, and lines (no latency)."""
    by_bench: dict[str, dict[str, list[Any]]] = {}
    for r in results:
        m = matrices.get(r.condition.benchmark)
        if m is None:
            continue
        d = by_bench.setdefault(m.benchmark, {"measured": [], "published": [], "lines": []})
        measured = next((w.measured for w in r.rows if w.measure == m.primary and w.measured is not None), None)
        published = next((e.value for e in r.condition.expected if e.measure == m.primary), None)
        label = r.condition.name
        if measured is not None and r.latency_ms is not None:
            d["measured"].append((r.latency_ms, measured, label, r.condition.type))
        elif measured is not None:
            d["lines"].append((measured, f"{label} (measured, no latency)", "measured"))
        elif published is not None and r.condition.published_latency_ms is not None:
            d["published"].append((r.condition.published_latency_ms, published, label, r.condition.type))
        elif published is not None:
            d["lines"].append((published, f"{label} (published)", "published"))
    return by_bench


def plot_efficiency(results: Sequence[Result], matrices: Sequence[Matrix], path: str | os.PathLike,
                    family: Mapping[str, Any] | str | os.PathLike | None = None) -> Path:
    """Efficiency-effectiveness plot: query latency (ms, log scale) vs the benchmark's primary measure.

    ``family``: a ``family.json`` of ``tools/experiments/family_distill.py`` (or its dict): one more panel with one
    marker per re-ranker architecture (BERT_Dot, ColBERT, PreTTR, BERT_CAT) at (its latency per query, its nDCG@10)
    (:func:`family_points`; read before anything is drawn, so a bad file fails first).

    One panel per benchmark. Conditions run here are filled markers at (measured latency, measured score);
    published figures with a published latency are hollow markers labelled *published*; figures without a latency
    (published numbers of conditions not run here, and reference runs, which have no timing) are dashed horizontal
    lines labelled at the right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fam = family_points(family) if family is not None else None
    mats = {m.benchmark: m for m in matrices}
    data = _points(results, mats)
    benches = [b for b in mats if b in data and any(data[b].values())]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(benches) + (1 if fam else 0))
    cols = 2 if n > 1 else 1
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(7.5 * cols, 4.8 * rows_n), squeeze=False)
    colors = {"bm25": "#1f77b4", "dense": "#d62728", "rerank": "#2ca02c", "hybrid": "#9467bd",
              "reference-run": "#7f7f7f"}
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if fam:
        _family_panel(axes.flat[len(benches)], fam, "model family in miniature: Margin-MSE students re-ranking the "
                      "DL19 BM25 top 100\n(tools/experiments/family_distill.py, measured here)",
                      *_family_extras(family))
    if not benches and not fam:
        ax = axes.flat[0]
        ax.text(0.5, 0.5, "no condition has a score to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for ax, bench in zip(axes.flat, benches):
        d, primary = data[bench], mats[bench].primary
        xs = [p[0] for p in d["measured"] + d["published"]]
        for lat, score, label, typ in d["measured"]:
            ax.scatter([lat], [score], marker=_TYPE_MARKERS.get(typ, "o"), s=70, color=colors.get(typ, "k"),
                       zorder=3, label=f"{typ} (measured here)")
            ax.annotate(f"{label}\n{score:.4f}", (lat, score), textcoords="offset points", xytext=(7, 4), fontsize=8)
        for lat, score, label, typ in d["published"]:
            ax.scatter([lat], [score], marker=_TYPE_MARKERS.get(typ, "o"), s=70, facecolors="none",
                       edgecolors=colors.get(typ, "k"), zorder=3, label="published")
            ax.annotate(f"{label} (published)\n{score:.4f}", (lat, score), textcoords="offset points",
                        xytext=(7, -12), fontsize=8, color="#555555")
        scores = [p[1] for p in d["measured"] + d["published"]] + [p[0] for p in d["lines"]]
        lo, hi = min(scores), max(scores)
        pad = max(0.03, 0.12 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
        if xs:
            ax.set_xscale("log")
            ax.set_xlim(min(xs) / 3, max(xs) * 10)
        else:
            ax.set_xscale("log")
            ax.set_xlim(1, 1000)
        # lines: merge equal values, draw them, then label them at the left, spread so labels never overlap
        merged: dict[float, list[str]] = {}
        kinds: dict[float, str] = {}
        for score, label, kind in d["lines"]:
            key = round(score, 4)
            merged.setdefault(key, []).append(label)
            kinds[key] = "measured" if kind == "measured" or kinds.get(key) == "measured" else kind
        for score in merged:
            style: dict[str, Any] = dict(color="#555555", ls="--", lw=0.9) if kinds[score] == "published" else \
                dict(color="#555555", ls=":", lw=1.4)
            ax.axhline(score, zorder=1, **style)
        ymin, ymax = ax.get_ylim()
        gap = 0.06 * (ymax - ymin)
        targets = sorted(merged, reverse=True)
        ys: list[float] = []
        for score in targets:  # top-down: each label at its line, or just below the previous label
            ys.append(min(score, ys[-1] - gap) if ys else score)
        if ys and ys[-1] < ymin + gap / 2:  # ran off the bottom: shift the whole stack up
            shift = ymin + gap / 2 - ys[-1]
            ys = [y + shift for y in ys]
            for i in range(len(ys) - 2, -1, -1):  # keep the order after shifting
                ys[i] = max(ys[i], ys[i + 1] + gap)
        for score, y in zip(targets, ys):
            text = f"{' / '.join(merged[score])}: {score:.4f}"
            box = dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85)
            ax.annotate(text, xy=(0.30, score), xycoords=("axes fraction", "data"), xytext=(0.015, y),
                        textcoords=("axes fraction", "data"), ha="left", va="center", fontsize=7, color="#222222",
                        bbox=box, zorder=4, arrowprops=None if abs(y - score) < 1e-9 else
                        dict(arrowstyle="-", color="#999999", lw=0.6, shrinkA=0, shrinkB=0))
        if ys and max(ys) > ymax - gap / 2:
            ax.set_ylim(ymin, max(ys) + gap)
        if not (d["measured"] or d["published"]):
            ax.text(0.5, 0.5, "no condition timed here:\nscores shown without a latency", transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="#999999", style="italic")
        ax.set_title(f"{bench}", fontsize=11)
        ax.set_xlabel("query latency (ms per query, log scale)")
        ax.set_ylabel(primary)
        ax.grid(True, which="both", alpha=0.25)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        if uniq:
            ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="lower left")
    if benches or not fam:  # the legend of the benchmark panels (a family panel alone explains itself)
        fig.suptitle("Efficiency vs effectiveness — filled markers: run and timed here; dashed lines: published, "
                     "no latency;\ndotted lines: measured here without a latency (reference runs)", fontsize=9,
                     y=0.995)
        fig.tight_layout(rect=(0, 0, 1, 0.965))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
