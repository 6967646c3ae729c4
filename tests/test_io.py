"""Strict readers and exact writers (kd_pyserini.trec_io), and kd-eval against Java trec_eval on malformed inputs.

The case table :data:`CASES` runs Java trec_eval (Anserini's jar: ``trec_eval -c -m ndcg_cut.10 QRELS RUN``) and
kd-eval on small edge-case run and qrels files and pins both behaviours:

* ``same``: Java accepts, kd-eval accepts and the nDCG@10 values agree to 4 decimals;
* ``refuse``: kd-eval exits 1 with one ``Error: FILE:LINE: ...`` line (Java refuses too unless the case says why not);
* ``as``: kd-eval reads the file as it reads ``ref`` (a cleaned copy), on purpose unlike Java; the value equals
  Java's on ``ref``.

Where kd-eval deliberately differs from Java the ``why`` column says so. The Java side is the trec_eval of the jar
that is installed (Pyserini 1.6: Anserini 1.7.1; Pyserini 2.x: Anserini 2.3.0); both jars give the same outcome and
value on every case of the table (checked case by case). Anserini's trec_eval wrapper exits 0 even when trec_eval
refuses a file: a refusal is recognised by the missing result line, and must come with trec_eval's own message
(``trec_eval...: Malformed line 2``), which Anserini 1.7.1 writes to stderr and Anserini 2.3.0 to stdout.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from click.testing import CliRunner

from kd_pyserini.cli.eval import main as kd_eval
from kd_pyserini.corpus import read_corpus
from kd_pyserini.evaluation import evaluate
from kd_pyserini.trec_io import (FormatError, RunWarnings, ScoreError, open_text, read_qrels, read_run, read_topics,
                                 write_run)

BOM = b"\xef\xbb\xbf"

# ---------------------------------------------------------------------------------------------- Java vs kd-eval table

QRELS = b"1 0 a 2\n1 0 b 1\n1 0 c 0\n2 0 d 1\n2 0 e 2\n"
RUN = b"1 Q0 a 1 3.0 t\n1 Q0 b 2 2.0 t\n1 Q0 c 3 1.0 t\n2 Q0 e 1 2 t\n2 Q0 x 2 1 t\n2 Q0 d 3 0.5 t\n"

Case = namedtuple("Case", "id run qrels kd line ref why", defaults=(RUN, QRELS, "same", None, None, ""))
# kd: "same" | "refuse-run" | "refuse-qrels" | "as"; line: the line the error names (0: the file without a line);
# ref: (run, qrels) kd-eval's reading equals (for "as"); java_refuses is checked from the real Java run.
CASES = [
    # --- runs trec_eval accepts and kd-eval reads identically
    Case("run-ok"),
    Case("run-tabs-trailing-ws-crlf-blank-lines-no-final-newline",
         run=b"1\tQ0\ta\t1\t3.0\tt  \r\n\n   \n1 Q0 b 2 2.0 t\t\r\n1  Q0  c  3  1.0  t\n\n2 Q0 d 1 1 t"),
    Case("run-interleaved-queries", run=b"1 Q0 a 1 3.0 t\n2 Q0 d 1 1 t\n1 Q0 c 2 2.0 t\n2 Q0 e 2 0.5 t\n"),
    Case("run-ties-broken-by-docid-descending", run=b"1 Q0 a 1 1.0 t\n1 Q0 b 2 1.0 t\n1 Q0 c 3 1.0 t\n"),
    Case("run-number-spellings",
         run=b"1 Q0 c 1 +2 t\n1 Q0 b 2 .5 t\n1 Q0 a 3 1e-3 t\n2 Q0 d 1 3. t\n2 Q0 e 2 -1E2 t\n"),
    Case("run-rank-column-ignored", run=b"1 Q0 c 9 1.0 t\n1 Q0 a x 3.0 t\n1 Q0 b - 2.0 t\n"),
    # fields after the run tag: "Any field following run_id is ignored" (trec_eval's get_trec_results.c)
    Case("run-7-fields-tag-with-a-space", run=b"1 Q0 a 1 3.0 my tag\n1 Q0 b 2 2.0 my tag\n2 Q0 e 1 2 my tag\n"),
    Case("run-trailing-comments-on-some-lines",
         run=b"1 Q0 a 1 3.0 t # best\n1 Q0 b 2 2.0 t\n1 Q0 c 3 1.0 t extra columns 7 8 9\n2 Q0 e 1 2 t\n"),
    Case("run-extra-column-on-the-first-line-only", run=b"1 Q0 a 1 3.0 t 0.97\n1 Q0 b 2 2.0 t\n2 Q0 d 1 1 t\n"),
    Case("run-extra-fields-then-a-5-field-line", run=b"1 Q0 a 1 3.0 t x\n1 Q0 b 2 2.0\n", kd="refuse-run", line=2),
    # --- runs trec_eval refuses: kd-eval refuses, naming the line
    # (a cut line 'qid Q0 docid' with a numeric docid also parses as MS MARCO 'qid docid rank', docid 'Q0')
    Case("run-trec-line-cut-to-3-fields", run=b"1 Q0 a 1 3.0 t\n1 Q0 7\n", kd="refuse-run", line=2),
    Case("run-first-line-cut-to-3-fields", run=b"1 Q0 7\n1 Q0 8\n", kd="refuse-run", line=1),
    Case("run-mixed-trec-then-msmarco", run=b"1 Q0 a 1 3.0 t\n1\tb\t2\n", kd="refuse-run", line=2),
    Case("run-mixed-msmarco-then-trec", run=b"1\ta\t1\n1 Q0 b 2 2.0 t\n", kd="refuse-run", line=2),
    Case("run-5-fields", run=b"1 Q0 a 1 3.0\n", kd="refuse-run", line=1),
    Case("run-duplicate-docid", run=b"1 Q0 c 1 3 t\n1 Q0 b 2 2.0 t\n1 Q0 c 3 1.0 t\n", kd="refuse-run", line=3),
    Case("run-duplicate-docid-same-score", run=b"1 Q0 a 1 3.0 t\n1 Q0 a 1 3.0 t\n", kd="refuse-run", line=2),
    Case("run-empty", run=b"", kd="refuse-run", line=1),
    Case("run-only-blank-lines", run=b"\n  \n", kd="refuse-run", line=1,
         why="Java prints no result at all (its wrapper still exits 0)"),
    Case("run-answers-no-judged-query", run=b"9 Q0 a 1 3.0 t\n", kd="refuse-run", line=0),
    # --- runs trec_eval accepts but reads silently wrong: kd-eval refuses on purpose
    Case("run-nan-score", run=b"1 Q0 c 1 nan t\n1 Q0 b 2 2.0 t\n1 Q0 a 3 1.0 t\n", kd="refuse-run", line=1,
         why="trec_eval ranks NaN arbitrarily (qsort with a NaN comparison)"),
    Case("run-inf-score", run=b"1 Q0 a 1 3.0 t\n1 Q0 c 2 -inf t\n", kd="refuse-run", line=2,
         why="an infinite score comes from a broken system; refused like NaN"),
    Case("run-overflowing-score", run=b"1 Q0 a 1 1e400 t\n", kd="refuse-run", line=1,
         why="C reads 1e400 as infinity"),
    Case("run-word-score", run=b"1 Q0 a 1 3.0 t\n1 Q0 b 2 high t\n", kd="refuse-run", line=2,
         why="C atof reads 'high' as 0.0"),
    Case("run-hex-score", run=b"1 Q0 a 1 0x10 t\n", kd="refuse-run", line=1,
         why="C atof reads hex; a score is a decimal number"),
    Case("run-duplicate-docid-unjudged-query", run=b"1 Q0 a 1 3.0 t\n9 Q0 a 1 2.0 t\n9 Q0 a 2 1.0 t\n",
         kd="refuse-run", line=3,
         why="trec_eval only checks the queries it evaluates; which line wins would decide the score once the query "
             "is judged"),
    Case("run-not-utf8", run=b"1 Q0 a\xe9 1 3.0 t\n1 Q0 b 2 2.0 t\n", kd="refuse-run", line=1,
         why="trec_eval compares raw bytes; a docid in another encoding never matches the UTF-8 qrels"),
    # --- runs kd-eval reads differently from trec_eval, on purpose
    Case("run-msmarco-format", run=b"1\ta\t1\n1\tb\t2\n2\te\t1\n", kd="as",
         ref=(b"1 Q0 a 1 -1 t\n1 Q0 b 2 -2 t\n2 Q0 e 1 -1 t\n", QRELS),
         why="trec_eval reads only TREC runs; kd-eval also reads MS MARCO runs, score = -rank"),
    Case("run-utf8-bom", run=BOM + RUN, kd="as", ref=(RUN, QRELS),
         why="trec_eval reads the BOM as part of the first qid; kd-eval drops it, as every UTF-8-aware tool does"),
    # --- qrels
    Case("qrels-tabs-crlf-trailing-ws-no-final-newline", qrels=b"1\t0\ta\t2\r\n1 0 b 1  \n1 0 c 0\n2 0 d 1\n2 0 e 2"),
    Case("qrels-interleaved-queries", qrels=b"1 0 a 2\n2 0 d 1\n1 0 b 1\n2 0 e 2\n"),
    Case("qrels-negative-grade", qrels=b"1 0 a 2\n1 0 b -1\n2 0 e 2\n"),
    Case("qrels-duplicate-same-grade", qrels=b"1 0 a 2\n1 0 b 1\n1 0 a 2\n", kd="refuse-qrels", line=3),
    Case("qrels-duplicate-different-grade", qrels=b"1 0 a 2\n1 0 b 1\n1 0 a 0\n", kd="refuse-qrels", line=3),
    Case("qrels-3-fields", qrels=b"1 0 a 2\n1 0 b\n", kd="refuse-qrels", line=2),
    Case("qrels-5-fields", qrels=b"1 0 a 2 x\n1 0 b 1\n", kd="refuse-qrels", line=1),
    Case("qrels-empty", qrels=b"", kd="refuse-qrels", line=1),
    Case("qrels-duplicate-unanswered-query", qrels=b"1 0 a 2\n7 0 z 1\n7 0 z 1\n", kd="refuse-qrels", line=3,
         why="trec_eval only checks queries the run answers; the result would depend on the run"),
    Case("qrels-word-grade", qrels=b"1 0 a 2\n1 0 b one\n", kd="refuse-qrels", line=2,
         why="C atol reads 'one' as grade 0"),
    Case("qrels-fractional-grade", qrels=b"1 0 a 2\n1 0 b 1.5\n", kd="refuse-qrels", line=2,
         why="C atol reads 1.5 as grade 1"),
    Case("qrels-not-utf8", qrels=b"1 0 a\xe9 2\n1 0 b 1\n", kd="refuse-qrels", line=1,
         why="raw bytes never match a UTF-8 run's docid"),
    Case("qrels-blank-lines", qrels=b"1 0 a 2\n\n1 0 b 1\n   \n1 0 c 0\n2 0 d 1\n2 0 e 2\n\n", kd="as",
         ref=(RUN, QRELS), why="trec_eval refuses any blank qrels line, even a trailing one; a blank line is "
                               "unambiguous, and every kd_pyserini reader skips blank lines"),
    Case("qrels-utf8-bom", qrels=BOM + QRELS, kd="as", ref=(RUN, QRELS),
         why="trec_eval reads the BOM as part of the first qid; kd-eval drops it"),
]
JAVA_REFUSES = {c.id for c in CASES if c.kd.startswith("refuse")} - {
    "run-nan-score", "run-inf-score", "run-overflowing-score", "run-word-score", "run-hex-score",
    "run-duplicate-docid-unjudged-query", "run-not-utf8", "qrels-duplicate-unanswered-query", "qrels-word-grade",
    "qrels-fractional-grade", "qrels-not-utf8"} | {"run-msmarco-format", "qrels-blank-lines"}


def java_trec_eval(tmp: Path, run: bytes, qrels: bytes) -> tuple[str | None, list[str]]:
    """Java trec_eval's ``-c`` nDCG@10 (4 decimals) or ``None`` when it refuses the input, and its other output lines.

    The other lines are trec_eval's messages from stdout and stderr together: Anserini 1.7.1 prints them on stderr,
    Anserini 2.3.0 on stdout (next to the result lines), so only ``ndcg_cut_10 all VALUE`` counts as a result.
    """
    from kd_pyserini.jvm import anserini_jar, find_java

    (tmp / "java").mkdir(exist_ok=True)
    rp, qp = tmp / "java" / "run.txt", tmp / "java" / "qrels.txt"
    rp.write_bytes(run)
    qp.write_bytes(qrels)
    out = subprocess.run([str(find_java().java), "-cp", str(anserini_jar()), "trec_eval", "-c", "-m", "ndcg_cut.10",
                          str(qp), str(rp)], capture_output=True, timeout=120)
    lines = out.stdout.decode(errors="replace").splitlines() + out.stderr.decode(errors="replace").splitlines()
    value, messages = None, []
    for line in lines:
        fields = line.split()
        if len(fields) == 3 and fields[:2] == ["ndcg_cut_10", "all"]:
            value = fields[2]
        elif line.strip() and not line.startswith("WARNING:"):  # the JVM's own start-up warnings (Lucene 10)
            messages.append(line)
    # the wrapper exits 0 on a refusal too; anything else (no main class, an exception) is a broken Java, not a refusal
    assert out.returncode == 0 and not any("Exception" in m or m.startswith("Error:") for m in messages), lines
    return value, messages


def java_ndcg10(tmp: Path, run: bytes, qrels: bytes) -> str | None:
    """Java trec_eval's ``-c`` nDCG@10 (4 decimals), or ``None`` when it refuses the input."""
    return java_trec_eval(tmp, run, qrels)[0]


#: Java trec_eval's outcome on every case, frozen: ``{case id: {"value": nDCG@10 or null, "refused_by_itself": bool,
#: "ref_value": the value on ``ref`` for "as" cases}}``. The fast tier checks kd-eval against it without a JVM; the
#: full suite re-derives it from the installed jar (both Anserini lines give the same table) and fails on any change.
#: Regenerate after editing CASES: ``KD_PYSERINI_REFREEZE=1 python -m pytest tests/test_io.py -k frozen_table``.
FROZEN_OUTCOMES = Path(__file__).resolve().parent / "data" / "java_trec_eval_outcomes.json"


def _java_outcome(tmp: Path, case: Case) -> dict:
    value, messages = java_trec_eval(tmp, case.run, case.qrels)
    if value is not None or case.id == "run-only-blank-lines":  # that refusal: no result and no message either
        assert messages == [], messages
    else:  # a refusal by trec_eval itself, in either jar's stream
        assert messages and messages[0].startswith("trec_eval"), messages
    out = {"value": value, "refused_by_itself": value is None and bool(messages)}
    if case.kd == "as":
        out["ref_value"] = java_ndcg10(tmp, *case.ref)
    return out


def test_java_outcomes_equal_the_frozen_table(tmp_path):
    """Every case through the installed jar (one JVM per case), compared with the frozen table the fast tier uses."""
    got = {case.id: _java_outcome(tmp_path, case) for case in CASES}
    if os.environ.get("KD_PYSERINI_REFREEZE") == "1":
        FROZEN_OUTCOMES.parent.mkdir(exist_ok=True)
        FROZEN_OUTCOMES.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(FROZEN_OUTCOMES.read_text()), "the jar's outcomes changed: see FROZEN_OUTCOMES"
    assert {k for k, v in got.items() if v["value"] is None} == JAVA_REFUSES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kd_eval_against_the_frozen_reference_outcomes(tmp_path, case):
    """kd-eval on each case: the same value where the reference accepts the files, a one-line file:line error where
    the case says kd refuses, and the reference's value on the cleaned files for "as" cases."""
    ref = json.loads(FROZEN_OUTCOMES.read_text())[case.id]
    assert (ref["value"] is None) == (case.id in JAVA_REFUSES), (case.id, ref, case.why)
    rp, qp = tmp_path / "run.txt", tmp_path / "qrels.txt"
    rp.write_bytes(case.run)
    qp.write_bytes(case.qrels)
    res = CliRunner().invoke(kd_eval, ["--qrels", str(qp), "-m", "nDCG@10", str(rp), "--format", "json"])
    if case.kd.startswith("refuse"):
        lines = res.output.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1, res.output
        bad = rp if case.kd == "refuse-run" else qp
        assert lines[0].startswith(f"Error: {bad}:{case.line}: " if case.line else f"Error: {bad}: "), lines[0]
        return
    assert res.exit_code == 0, res.output
    got = f"{json.loads(res.stdout)[str(rp)]['nDCG@10']:.4f}"
    if case.kd == "same":
        assert got == ref["value"]
    else:  # "as": the reference's value on the cleaned files
        assert ref["ref_value"] is not None and got == ref["ref_value"]


def test_kd_eval_refusal_exit_status_in_a_real_process(tmp_path):
    qp, rp = tmp_path / "qrels.txt", tmp_path / "run.txt"
    qp.write_bytes(QRELS)
    rp.write_bytes(b"1 Q0 c 1 nan t\n")
    out = subprocess.run([sys.executable, "-m", "kd_pyserini.cli.eval", "--qrels", str(qp), "-m", "nDCG@10", str(rp)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [f"Error: {rp}:1: score 'nan' is not a finite number; NaN and infinite "
                                               "scores have no defined rank order: fix the system that wrote the run"]


# ---------------------------------------------------------------------------------------------- runs

def _w(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_run_format_is_decided_by_the_first_line(tmp_path):
    cut = _w(tmp_path / "cut.txt", "264014 Q0 3338827 1 109.1 rank\n264014 Q0 3338827\n")
    with pytest.raises(FormatError, match=r"cut\.txt:2: 3 fields \(a line cut short, or an MS MARCO line in a TREC "
                                          r"run\?\); expected 6 .* as on line 1"):
        read_run(cut)
    first_cut = _w(tmp_path / "first.txt", "264014 Q0 3338827\n264014 Q0 1804644\n")
    with pytest.raises(FormatError, match=r"first\.txt:1: 3 fields with 'Q0' as the docid: a TREC line cut short"):
        read_run(first_cut)
    msmarco = _w(tmp_path / "m.txt", "\n1\ta\t1\n1\tb\t2\n1 Q0 c 3 1.0 t\n")
    with pytest.raises(FormatError, match=r"m\.txt:4: 6 fields; expected 3 .* as on line 2: a run is all TREC or "
                                          "all MS MARCO"):
        read_run(msmarco)
    with pytest.raises(FormatError, match=r"rank '1\.5' is not an integer"):
        read_run(_w(tmp_path / "r.txt", "1\ta\t1.5\n"))
    assert read_run(_w(tmp_path / "ok.txt", "1\ta\t1\n1\tb\t2\n")) == {"1": {"a": -1.0, "b": -2.0}}


@pytest.mark.parametrize("score", ["nan", "NaN", "-nan", "inf", "-Infinity", "1e999"])
def test_non_finite_scores_are_refused(tmp_path, score):
    p = _w(tmp_path / "run.txt", f"1 Q0 a 1 1.0 t\n1 Q0 b 2 {score} t\n")
    with pytest.raises(FormatError, match=rf"run\.txt:2: score '{score}' (is not a finite number|overflows)"):
        read_run(p)


def test_duplicate_docids_warn_or_refuse(tmp_path):
    p = _w(tmp_path / "run.txt", "1 Q0 a 1 2.0 t\n1 Q0 z 2 1.0 t\n1 Q0 a 3 0.5 t\n")
    w = RunWarnings()
    assert read_run(p, warnings=w) == {"1": {"a": 2.0, "z": 1.0}} and w == {"duplicate_docids": 1}
    with pytest.raises(FormatError, match=r"run\.txt:3: document 'a' listed again for query '1' \(first at line "
                                          r"1\); trec_eval refuses"):
        read_run(p, duplicates="error")


def test_fields_after_the_tag_are_ignored_and_counted(tmp_path, caplog):
    p = _w(tmp_path / "run.txt", "1 Q0 a 1 3.0 t # first\n1 Q0 b 2 2.0 t\n1 Q0 c 3 1.0 t 7 8\n")
    w = RunWarnings()
    assert read_run(p, warnings=w) == {"1": {"a": 3.0, "b": 2.0, "c": 1.0}}
    assert w == {"extra_fields": 2}
    with caplog.at_level("WARNING", logger="kd_pyserini.trec_io"):  # no RunWarnings given: logged once
        read_run(p)
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}: 2 lines have fields after the run tag (the sixth field); ignored, as trec_eval ignores them"]
    # a duplicate is still refused and named by both lines, whatever the number of fields on the first
    dup = _w(tmp_path / "dup.txt", "1 Q0 a 1 3.0 t # x\n1 Q0 a 2 2.0 t\n")
    with pytest.raises(FormatError, match=r"dup\.txt:2: document 'a' listed again for query '1' \(first at line 1\)"):
        read_run(dup, duplicates="error")
    # kd-eval says so once per file, on stderr, with the count; the value is trec_eval's on the clean file
    qp = _w(tmp_path / "qrels.txt", QRELS)
    res = CliRunner().invoke(kd_eval, ["--qrels", str(qp), "-m", "nDCG@10", str(p), "--format", "json"])
    assert res.exit_code == 0, res.output
    notices = [line for line in res.stderr.splitlines() if "after the run tag" in line]
    assert notices == [f"kd-eval: warning: {p}: 2 lines have fields after the run tag (the sixth field); ignored, "
                       "as trec_eval ignores them"]
    clean = _w(tmp_path / "clean.txt", "1 Q0 a 1 3.0 t\n1 Q0 b 2 2.0 t\n1 Q0 c 3 1.0 t\n")
    assert json.loads(res.stdout)[str(p)] == evaluate(read_run(clean), read_qrels(qp), ["nDCG@10"])


def test_fusion_rank_column_must_be_an_integer_when_ranks_are_read(tmp_path):
    p = _w(tmp_path / "run.txt", "1 Q0 a 1 3.0 t\n1 Q0 b x 2.0 t\n")
    assert read_run(p) == {"1": {"a": 3.0, "b": 2.0}}  # trec_eval ignores the rank column, so does kd-eval
    with pytest.raises(FormatError, match=r"run\.txt:2: rank 'x' is not an integer; fusion with ranks from the file"):
        read_run(p, ranks={})
    ranks: dict = {}
    read_run(_w(tmp_path / "m.txt", "1\ta\t2\n1\tb\t1\n"), ranks=ranks)
    assert ranks == {"1": {"a": 2, "b": 1}}


def test_empty_run_is_refused(tmp_path):
    with pytest.raises(FormatError, match=r"empty\.txt:1: the run is empty"):
        read_run(_w(tmp_path / "empty.txt", "\n\n"))


# ---------------------------------------------------------------------------------------------- qrels, topics

@pytest.mark.parametrize("second", ["1 0 a 2", "1 0 a 0"], ids=["same-grade", "other-grade"])
def test_duplicate_qrels_name_both_lines(tmp_path, second):
    p = _w(tmp_path / "q.txt", f"1 0 a 2\n1 0 b 1\n{second}\n")
    with pytest.raises(FormatError, match=rf"q\.txt:3: document 'a' judged again for query '1' \(grade "
                                          rf"{second[-1]}; first at line 1, grade 2\)"):
        read_qrels(p)


def test_topics_reader_contract(tmp_path):
    p = _w(tmp_path / "t.tsv", "1\t first query \n\n2\tsecond\n")
    assert read_topics(p) == {"1": "first query", "2": "second"}
    gz = tmp_path / "t.tsv.gz"
    gz.write_bytes(gzip.compress(BOM + "3\tthird\n".encode()))
    assert read_topics(gz) == {"3": "third"}
    with pytest.raises(FormatError, match=r"t2\.tsv:2: no tab; expected 'qid<TAB>query'"):
        read_topics(_w(tmp_path / "t2.tsv", "1\ta\n2 b\n"))
    with pytest.raises(FormatError, match=r"t3\.tsv:3: query id '1' repeated \(first at line 1\)"):
        read_topics(_w(tmp_path / "t3.tsv", "1\ta\n2\tb\n1\tc\n"))


def test_shared_topics_have_unique_qids(data_dir):
    counts = {"topics.dl19-passage.txt": 43, "topics.dl20.txt": 200, "topics.msmarco-passage.dev-subset.txt": 6980,
              "topics.beir-v1.0.0-scifact.test.tsv.gz": 300}
    for name, n in counts.items():
        assert len(read_topics(data_dir / "topics-and-qrels" / name)) == n, name


# ---------------------------------------------------------------------------------------------- BOM and encodings

def test_bom_is_dropped_by_every_reader(tmp_path):
    assert read_run(_w(tmp_path / "r.txt", BOM + b"1 Q0 a 1 1.0 t\n")) == {"1": {"a": 1.0}}
    assert read_qrels(_w(tmp_path / "q.txt", BOM + b"1 0 a 1\n")) == {"1": {"a": 1}}
    assert read_topics(_w(tmp_path / "t.tsv", BOM + b"1\tq\n")) == {"1": "q"}
    corpora = {"c.tsv": b"7\tseven\n", "c.jsonl": b'{"id": "7", "contents": "seven"}\n',
               "beir.jsonl": b'{"_id": "7", "title": "", "text": "seven"}\n'}
    for name, body in corpora.items():
        for path in (_w(tmp_path / name, BOM + body), tmp_path / f"{name}.gz"):
            if path.suffix == ".gz":
                path.write_bytes(gzip.compress(BOM + body))
            assert [(p.id, p.text) for p in read_corpus(path)] == [("7", "seven")], path
    with open_text(_w(tmp_path / "mid.txt", b"a\n" + BOM + b"b\n")) as f:
        assert f.read() == "a\n\ufeffb\n"  # only a leading BOM is a BOM


def test_non_utf8_bytes_are_one_line_errors_with_line_and_column(tmp_path):
    filler = "".join(f"{i}\tpassage number {i} with some words\n" for i in range(1, 3000)).encode()  # > 8 KiB
    cases = {
        "run.txt": (lambda p: read_run(p), b"1 Q0 a 1 1.0 t\n1 Q0 caf\xe9 2 0.5 t\n", 2, 9),
        "qrels.txt": (lambda p: read_qrels(p), b"1 0 a 1\n1 0 b 1\n1 0 \xff 0\n", 3, 5),
        "topics.tsv": (lambda p: read_topics(p), b"1\tcaf\xe9\n", 1, 6),
        "corpus.tsv": (lambda p: list(read_corpus(p)), filler + b"3000\tna\xefve caf\xe9\n", 3000, 8),
        "corpus.jsonl": (lambda p: list(read_corpus(p)), b'{"id": "1", "contents": "x"}\n{"id": "2", "contents": '
                                                         b'"\xe9"}\n', 2, 26),
        "beir.jsonl": (lambda p: list(read_corpus(p)), b'{"_id": "1", "title": "\xe9", "text": "x"}\n', 1, 24),
    }
    for name, (reader, data, line, col) in cases.items():
        for path in (tmp_path / name, tmp_path / f"{name}.gz"):
            path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
            with pytest.raises(FormatError) as e:
                reader(path)
            byte = data.splitlines()[line - 1][col - 1:col].hex() if name != "corpus.tsv" else "ef"
            assert str(e.value) == f"{path}:{line}: not UTF-8 (byte 0x{byte} at column {col}); fix: re-encode the " \
                                   "file as UTF-8", name


def test_gz_name_on_plain_text_and_truncated_gzip_are_clear_errors(tmp_path):
    plain = _w(tmp_path / "run.txt.gz", "1 Q0 a 1 1.0 t\n")
    with pytest.raises(FormatError, match=r"run\.txt\.gz:1: the name ends in \.gz but the file is not "
                                          "gzip-compressed"):
        read_run(plain)
    data = gzip.compress("".join(f"1 Q0 d{i} {i} {-i}.5 t\n" for i in range(1, 20000)).encode())
    cut = _w(tmp_path / "cut.txt.gz", data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"cut\.txt\.gz:\d+: the gzip data is truncated or corrupt \(EOFError"):
        read_run(cut)


# ---------------------------------------------------------------------------------------------- writers

def test_write_run_gz_is_gzip_also_before_the_rename(tmp_path, monkeypatch):
    import kd_pyserini.atomic as atomic

    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((Path(dst).name, Path(src).read_bytes()[:2]))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    run = {"2": {"x": 0.1, "y": 1 / 3}, "10": {"z": -2.5e-12}}
    out = write_run(run, tmp_path / "run.txt.gz", tag="t")
    assert seen == [("run.txt.gz", b"\x1f\x8b")]
    text = gzip.decompress(out.read_bytes()).decode()
    assert text.splitlines()[0] == f"2 Q0 y 1 {1 / 3!r} t"
    assert read_run(out) == run and [p.name for p in tmp_path.iterdir()] == ["run.txt.gz"]
    write_run(run, tmp_path / "run.msmarco.gz", msmarco=True)
    assert gzip.decompress((tmp_path / "run.msmarco.gz").read_bytes()).decode().splitlines()[0] == "2\ty\t1"


def test_write_run_scores_are_exact_and_non_finite_refused(tmp_path):
    import numpy as np

    run = {"1": {"a": 0.012345678901, "b": 0.012345678899, "c": np.float32(0.1), "d": 3}}
    p = write_run(run, tmp_path / "run.txt")
    back = read_run(p)
    assert back == {"1": {k: float(v) for k, v in run["1"].items()}}
    assert [ln.split()[2] for ln in p.read_text().splitlines()] == ["d", "c", "a", "b"]
    for bad in (math.nan, math.inf):
        with pytest.raises(ScoreError, match="score (nan|inf) is not a finite number"):
            write_run({"1": {"a": 1.0, "b": bad}}, tmp_path / "bad.txt.gz")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["run.txt"]  # nothing half-written left behind


def test_evaluate_refuses_non_finite_scores():
    with pytest.raises(ValueError, match="score nan is not a finite number"):
        evaluate({"1": {"a": math.nan, "b": 1.0}}, {"1": {"a": 1}}, "nDCG@10")
