"""Evaluation measures: names (ir_measures spelling), parsing, and the trec_eval options that compute each one.

A :class:`Measure` is a family plus its parameters (``RR(rel=2)@10``, ``IPrec@0.5``, ``Judged@10``); the family table
:data:`FAMILIES` says how each is computed (:mod:`kd_pyserini.evaluation` does the computing):

=================================  =====================================  ===========================================
measure (ir_measures name)          trec_eval (``-c``)                     definition (source)
=================================  =====================================  ===========================================
``nDCG@k`` / ``nDCG``               ``-m ndcg_cut.k`` / ``-m ndcg``        m_ndcg_cut.c / m_ndcg.c
``RR[(rel=N)][@k]``                 ``[-l N] [-M k] -m recip_rank``        m_recip_rank.c
``AP[(rel=N)][@k]``                 ``[-l N] -m map`` / ``-m map_cut.k``   m_map.c / m_map_cut.c
``R[(rel=N)]@k``                    ``[-l N] -m recall.k``                 m_recall.c
``P[(rel=N)]@k``                    ``[-l N] -m P.k``                      m_P.c
``Success[(rel=N)]@k``              ``[-l N] -m success.k``                m_success.c
``Rprec[(rel=N)]``                  ``[-l N] -m Rprec``                    m_Rprec.c: precision at rank R, R = the
                                                                           number of relevant documents
``Bpref[(rel=N)]``                  ``[-l N] -m bpref``                    m_bpref.c (Buckley & Voorhees, SIGIR 2004)
``IPrec[(rel=N)]@r``                ``[-l N] -m iprec_at_recall``          m_iprec_at_recall.c: the highest
(r in 0.0, 0.1, ..., 1.0)           (``iprec_at_recall_0.50``)             precision at any recall >= r
``NumRet``                          ``-m num_ret``                         m_num_ret.c (summed, not averaged)
``NumRel[(rel=N)]``                 ``[-l N] -m num_rel``                  m_num_rel.c (summed)
``NumRelRet[(rel=N)]``              ``[-l N] -m num_rel_ret``              m_num_rel_ret.c (summed); ir_measures'
                                                                           ``NumRet(rel=N)`` is read as this
``Judged@k``                        -- (not a trec_eval measure)           ir_measures' ``Judged``: the share of the
                                                                           top k that has a judgement (any grade)
=================================  =====================================  ===========================================

Family names are case-insensitive; ``MRR``, ``MAP``, ``Recall``, ``Precision`` and ``R-prec`` spellings are accepted as
aliases and ``@1K`` as ``@1000``. ``rel=N`` is trec_eval's ``-l N`` (the minimum grade that counts as relevant).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from kd_pyserini.errors import KdError

__all__ = ["Measure", "MeasureError", "Family", "FAMILIES", "IPREC_LEVELS", "SUPPORTED_FORMS", "parse_measure",
           "parse_measures", "trec_eval_args"]


@dataclass(frozen=True)
class Family:
    """How a measure family is computed.

    Attributes:
        trec: trec_eval's measure without a cut-off (``None``: a cut-off is required or it is not trec_eval's).
        trec_cut: trec_eval's measure with a cut-off ``.k`` (``None``: no cut-off, or one applied as ``-M k``).
        cut: ``"required"``, ``"optional"`` or ``"none"`` (the ``@`` part); for IPrec it is the recall level.
        rel: whether the family takes ``rel=N``.
        engine: ``"trec_eval"`` (pytrec_eval, the C trec_eval code) or ``"judged"`` (computed here).
        aggregate: ``"mean"`` over the judged queries or ``"sum"`` (trec_eval's ``all`` for the num_* counts).
    """

    trec: str | None
    trec_cut: str | None
    cut: Literal["required", "optional", "none"]
    rel: bool
    engine: Literal["trec_eval", "judged"] = "trec_eval"
    aggregate: Literal["mean", "sum"] = "mean"


FAMILIES: dict[str, Family] = {
    "nDCG": Family("ndcg", "ndcg_cut", "optional", False),
    "RR": Family("recip_rank", None, "optional", True),  # the cut-off is applied by truncating the run (-M k)
    "AP": Family("map", "map_cut", "optional", True),
    "R": Family(None, "recall", "required", True),
    "P": Family(None, "P", "required", True),
    "Success": Family(None, "success", "required", True),
    "Rprec": Family("Rprec", None, "none", True),
    "Bpref": Family("bpref", None, "none", True),
    "IPrec": Family(None, "iprec_at_recall", "required", True),
    "NumRet": Family("num_ret", None, "none", False, aggregate="sum"),
    "NumRel": Family("num_rel", None, "none", True, aggregate="sum"),
    "NumRelRet": Family("num_rel_ret", None, "none", True, aggregate="sum"),
    "Judged": Family(None, None, "required", False, engine="judged"),
}
_ALIASES = {"ndcg": "nDCG", "rr": "RR", "mrr": "RR", "ap": "AP", "map": "AP", "r": "R", "recall": "R", "p": "P",
            "precision": "P", "success": "Success", "rprec": "Rprec", "r-prec": "Rprec", "bpref": "Bpref",
            "iprec": "IPrec", "numret": "NumRet", "numrel": "NumRel", "numrelret": "NumRelRet", "judged": "Judged"}
#: the 11 recall levels of trec_eval's iprec_at_recall (the 11-point interpolated precision curve).
IPREC_LEVELS = tuple(i / 10 for i in range(11))
_MEASURE_RE = re.compile(r"^\s*(?P<fam>[A-Za-z][A-Za-z-]*)\s*(?:\((?P<params>[^()]*)\))?\s*"
                         r"(?:@\s*(?P<k>\d+(?:\.\d*)?|\.\d+)\s*(?P<kilo>[kK])?)?\s*$")
SUPPORTED_FORMS = ("nDCG[@k], RR[(rel=N)][@k], AP[(rel=N)][@k], R[(rel=N)]@k, P[(rel=N)]@k, Success[(rel=N)]@k, "
                   "Rprec[(rel=N)], Bpref[(rel=N)], IPrec[(rel=N)]@r (r = 0.0, 0.1, ..., 1.0), NumRet, "
                   "NumRel[(rel=N)], NumRelRet[(rel=N)], Judged@k "
                   "(e.g. nDCG@10, RR(rel=2)@10, R@1000, AP(rel=2), IPrec@0.5, Judged@10)")


class MeasureError(KdError, ValueError):
    """A measure name that cannot be parsed or is not supported; the message lists the supported forms."""


def _level_text(level: float) -> str:
    return f"{level:.1f}"


@dataclass(frozen=True)
class Measure:
    """One evaluation measure, e.g. ``RR(rel=2)@10`` = ``Measure("RR", cutoff=10, rel=2)``.

    Attributes:
        name: the measure family, ir_measures spelling (a key of :data:`FAMILIES`).
        cutoff: the rank cut-off ``k`` (``@k``), or ``None`` for the whole ranking; for ``IPrec`` the recall level
            (0.0, 0.1, ..., 1.0).
        rel: the minimum grade that counts as relevant (trec_eval ``-l``); 1 by default.
    """

    name: str
    cutoff: int | float | None = None
    rel: int = 1

    def __post_init__(self) -> None:
        fam = FAMILIES.get(self.name)
        if fam is None:
            raise MeasureError(f"unknown measure family {self.name!r}; supported: {SUPPORTED_FORMS}")
        if self.cutoff is None and fam.cut == "required":
            what = "a recall level (IPrec@0.5)" if self.name == "IPrec" else f"a cut-off ({self.name}@k)"
            raise MeasureError(f"{self.name} needs {what}; supported: {SUPPORTED_FORMS}")
        if self.cutoff is not None and fam.cut == "none":
            raise MeasureError(f"{self.name} takes no cut-off; supported: {SUPPORTED_FORMS}")
        if self.name == "IPrec":
            if self.cutoff is not None and not any(abs(float(self.cutoff) - lv) < 1e-9 for lv in IPREC_LEVELS):
                raise MeasureError(f"IPrec's recall level must be one of 0.0, 0.1, ..., 1.0 (trec_eval's 11 points), "
                                   f"got {self.cutoff}")
            object.__setattr__(self, "cutoff", round(float(self.cutoff), 1))  # type: ignore[arg-type]
        elif self.cutoff is not None:
            if float(self.cutoff) != int(self.cutoff) or int(self.cutoff) < 1:
                raise MeasureError(f"cut-off must be an integer >= 1, got {self.cutoff}")
            object.__setattr__(self, "cutoff", int(self.cutoff))
        if self.rel != 1 and not fam.rel:
            why = ("nDCG uses the graded judgements as gains" if self.name == "nDCG" else
                   "a document counts whatever its grade")
            raise MeasureError(f"{self.name} takes no rel parameter: {why}")

    def __str__(self) -> str:
        rel = f"(rel={self.rel})" if self.rel != 1 else ""
        if self.cutoff is None:
            cut = ""
        elif self.name == "IPrec":
            cut = f"@{_level_text(float(self.cutoff))}"
        else:
            cut = f"@{self.cutoff}"
        return f"{self.name}{rel}{cut}"

    @property
    def family(self) -> Family:
        return FAMILIES[self.name]

    @property
    def aggregate(self) -> str:
        """``"mean"`` or ``"sum"`` (NumRet, NumRel, NumRelRet: trec_eval's and ir_measures' total)."""
        return self.family.aggregate

    @property
    def _trec(self) -> str:
        """trec_eval's measure (the ``-m`` argument)."""
        fam = self.family
        if fam.engine != "trec_eval":
            raise MeasureError(f"{self} is not a trec_eval measure (ir_measures defines it; kd_pyserini computes it)")
        if self.name == "IPrec":
            return "iprec_at_recall"
        if self.cutoff is None or fam.trec_cut is None:
            return fam.trec  # type: ignore[return-value]
        return f"{fam.trec_cut}.{self.cutoff}"

    @property
    def _key(self) -> str:
        """The key pytrec_eval (and trec_eval's output) reports the measure under."""
        if self.name == "IPrec":
            return f"iprec_at_recall_{float(self.cutoff):.2f}"  # type: ignore[arg-type]
        return self._trec.replace(".", "_")

    @property
    def _truncate(self) -> int | None:
        """Cut the run to this many documents first (trec_eval ``-M``): RR@k only."""
        return self.cutoff if self.name == "RR" else None  # type: ignore[return-value]


def parse_measure(name: str | Measure) -> Measure:
    """Parse an ir_measures-style measure name.

    Args:
        name: e.g. ``"nDCG@10"``, ``"RR(rel=2)@10"``, ``"R@1000"``, ``"AP(rel=2)"``, ``"MRR@10"``, ``"R@1K"``,
            ``"Rprec"``, ``"Bpref(rel=2)"``, ``"IPrec@0.5"``, ``"NumRelRet"``, ``"NumRet(rel=2)"`` (=
            ``NumRelRet(rel=2)``, as in ir_measures), ``"Judged@10"``; a :class:`Measure` is returned unchanged.

    Returns:
        The :class:`Measure`; ``str()`` of it is the canonical spelling (``"MRR@10"`` -> ``"RR@10"``).

    Raises:
        MeasureError: unknown family, unknown parameter, a missing required cut-off, a cut-off the family does not
            take, or ``rel`` on a family without it.
    """
    if isinstance(name, Measure):
        return name
    m = _MEASURE_RE.match(name)
    if not m:
        raise MeasureError(f"cannot parse measure {name!r}; supported: {SUPPORTED_FORMS}")
    fam = _ALIASES.get(m.group("fam").lower())
    if fam is None:
        raise MeasureError(f"unknown measure {m.group('fam')!r} in {name!r}; supported: {SUPPORTED_FORMS}")
    rel, rel_given = 1, False
    if m.group("params") is not None and m.group("params").strip():
        for param in m.group("params").split(","):
            key, eq, value = (s.strip() for s in param.partition("="))
            if key != "rel" or not eq or not re.fullmatch(r"-?\d+", value):
                raise MeasureError(f"unsupported parameter {param.strip()!r} in {name!r}: the only parameter is "
                                   f"rel=N (an integer grade); supported: {SUPPORTED_FORMS}")
            rel, rel_given = int(value), True
    if fam == "NumRet" and rel_given:  # ir_measures: NumRet(rel=N) counts the retrieved documents of grade >= N
        fam = "NumRelRet"
    if rel_given and not FAMILIES[fam].rel:
        why = "nDCG uses the graded judgements as gains" if fam == "nDCG" else "a document counts whatever its grade"
        raise MeasureError(f"{fam} takes no rel parameter ({name!r}): {why}; supported: {SUPPORTED_FORMS}")
    cutoff: int | float | None = None
    if m.group("k") is not None:
        text = m.group("k")
        if fam == "IPrec":
            cutoff = float(text)
        else:
            if "." in text:
                raise MeasureError(f"cut-off must be an integer in {name!r} (only IPrec takes a recall level)")
            cutoff = int(text) * (1000 if m.group("kilo") else 1)
            if cutoff < 1:
                raise MeasureError(f"cut-off must be >= 1 in {name!r}")
    try:
        return Measure(fam, cutoff, rel)
    except MeasureError as e:
        raise MeasureError(f"{e} (in {name!r})") from None


def _split_top_level(spec: str) -> list[str]:
    """Split on commas that are not inside parentheses (``"RR(rel=2)@10,R@1000"``)."""
    parts, depth, cur = [], 0, []
    for ch in spec:
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_measures(spec: str | Measure | Iterable[str | Measure]) -> list[Measure]:
    """Parse one measure, a comma-separated list (``"nDCG@10,RR@10"``) or an iterable of names/measures.

    ``IPrec`` without a level (``"IPrec"`` or ``"IPrec(rel=2)"``) expands to the 11 points ``IPrec@0.0`` ...
    ``IPrec@1.0``.

    Returns:
        The measures in the given order, duplicates (after canonicalisation) removed.

    Raises:
        MeasureError: an unsupported name, or no measure at all.
    """
    items: list[str | Measure]
    if isinstance(spec, Measure):
        items = [spec]
    elif isinstance(spec, str):
        items = list(_split_top_level(spec))
    else:
        items = []
        for s in spec:
            items.extend(_split_top_level(s) if isinstance(s, str) else [s])
    out: list[Measure] = []
    for item in items:
        if isinstance(item, str) and re.fullmatch(r"\s*iprec\s*(\([^()]*\))?\s*", item, re.IGNORECASE):
            expanded = [parse_measure(f"{item.strip()}@{_level_text(lv)}") for lv in IPREC_LEVELS]
        else:
            expanded = [parse_measure(item)]
        for meas in expanded:
            if meas not in out:
                out.append(meas)
    if not out:
        raise MeasureError(f"no measure given; supported: {SUPPORTED_FORMS}")
    return out


def trec_eval_args(measure: str | Measure) -> list[str]:
    """The trec_eval options that compute ``measure`` (add ``-c`` for the complete-query mean).

    Example: ``trec_eval_args("RR(rel=2)@10") == ["-l", "2", "-M", "10", "-m", "recip_rank"]``;
    ``trec_eval_args("IPrec@0.5") == ["-m", "iprec_at_recall"]`` (reported as ``iprec_at_recall_0.50``).

    Raises:
        MeasureError: a measure trec_eval does not compute (``Judged@k``).
    """
    m = parse_measure(measure)
    trec = m._trec
    args = ["-l", str(m.rel)] if m.rel != 1 else []
    if m._truncate is not None:
        args += ["-M", str(m._truncate)]
    return args + ["-m", trec]
