"""Running the matrix: each condition's commands as child processes, then evaluation and the verdicts.

The matrix commands name console scripts (``kd-index``, ``kd-search``, ``kd-fuse``...); they run as ``python -m``
of their module (:data:`~kd_pyserini.reproduce.matrix.COMMAND_MODULES`) with this interpreter. Children's progress
bars follow the parent's: with progress on, ``$KD_PYSERINI_PROGRESS`` is ``1`` in their environment and their
stderr is streamed through to ours (a tail is kept for the log and the error message); with it off it is ``0``
and their stderr is captured.
"""

from __future__ import annotations

import codecs
import collections
import fnmatch
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kd_pyserini.progress import PROGRESS_ENV, progress_enabled
from kd_pyserini.reproduce.availability import build_resolver, check_condition
from kd_pyserini.reproduce.latency import PROBE_SOURCE, probe_latency, probe_spec, sidecar_latency
from kd_pyserini.reproduce.matrix import COMMAND_MODULES, Condition, Matrix, MatrixError, Resolver, load_matrices
from kd_pyserini.reproduce.verdicts import (ERROR, FAIL, NOT_RUNNABLE, PASS, RUNNABLE, Result, Row, checkable,
                                            compare, overall_status, short_problem, unmeasured_rows)

__all__ = ["Completed", "command_argv", "run_command", "run_condition", "reproduce", "evaluate_benchmark_runs"]

Echo = Callable[[str], Any]
#: lines of a streamed child's stderr kept for the log and the error message.
TAIL_LINES = 2000


def command_argv(command: str) -> list[str]:
    """A matrix command as an argv: ``kd-xxx`` becomes ``python -m <module>`` of this interpreter."""
    argv = shlex.split(command)
    if argv and argv[0] in COMMAND_MODULES:
        return [sys.executable, "-m", COMMAND_MODULES[argv[0]], *argv[1:]]
    if argv and argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


@dataclass
class Completed:
    """A finished child: exit status, its stdout, and its stderr (streamed: the tail, progress redraws folded)."""

    returncode: int
    stdout: str
    stderr: str


class _Tail:
    """The last :data:`TAIL_LINES` lines of a stream, each as it finally looked (``\\r`` redraws folded)."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.partial = ""

    def add(self, text: str) -> None:
        *done, self.partial = (self.partial + text).split("\n")
        self.lines.extend(line.rstrip("\r").rsplit("\r", 1)[-1] for line in done)

    def text(self) -> str:
        last = self.partial.rstrip("\r").rsplit("\r", 1)[-1]
        return "".join(f"{line}\n" for line in self.lines) + last


def run_command(argv: Sequence[str], env: Mapping[str, str], forward: IO[str] | None = None) -> Completed:
    """Run ``argv``; stdout is captured. Without ``forward`` stderr is captured too; with it, stderr is written
    through to ``forward`` as it comes (progress bars included) and only its tail is kept."""
    if forward is None:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=dict(env))
        return Completed(proc.returncode, proc.stdout, proc.stderr)
    child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env))
    tail = _Tail()

    def pump() -> None:
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        assert child.stderr is not None
        while chunk := child.stderr.read1(65536):  # type: ignore[attr-defined]
            text = decode(chunk)
            tail.add(text)
            try:
                forward.write(text)
                forward.flush()
            except (OSError, ValueError):  # our stderr went away: keep draining the child's
                pass
        tail.add(decode(b"", final=True))

    thread = threading.Thread(target=pump, name="kd-repro-stderr", daemon=True)
    thread.start()
    assert child.stdout is not None
    out = child.stdout.read().decode("utf-8", errors="replace")
    code = child.wait()
    thread.join()
    return Completed(code, out, tail.text())


_QRELS_CACHE: dict[str, Any] = {}


def _evaluate_file(run_file: Path, matrix: Matrix, extra_measures: Sequence[str] = ()) -> dict[str, float]:
    """The matrix's measures (and ``extra_measures``) of a run file, ``trec_eval -c``."""
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.resources import get_qrels
    from kd_pyserini.trec_io import read_run

    if matrix.qrels not in _QRELS_CACHE:
        _QRELS_CACHE[matrix.qrels] = get_qrels(matrix.qrels)
    measures = list(dict.fromkeys([*matrix.measures, *extra_measures]))
    return evaluate(read_run(run_file), _QRELS_CACHE[matrix.qrels], measures)


def _failed(result: Result, cond: Condition, matrix: Matrix, problem: str, logs: list[str],
            per_figure: bool = True) -> Result:
    """``result`` marked ``error`` with ``problem``: one row per published figure (``per_figure``), else one row."""
    result.status = ERROR
    result.problems = [problem]
    result.log = "\n".join(logs)
    result.rows = (unmeasured_rows(cond, matrix.primary, ERROR, problem) if per_figure else
                   [Row(cond.benchmark, cond.name, matrix.primary, None, None, None, None, ERROR, problem)])
    return result


def _latency(cond: Condition, matrix: Matrix, search_cmds: list[str], run_file: Path, latency_queries: int,
             dep_latencies: Mapping[str, float | None], search_wall: float | None, n_queries: int,
             echo: Echo) -> tuple[float | None, str | None]:
    """A produced condition's latency (ms/query) and its source: the in-process probe of its one kd-search (the
    search its run's sidecar records, :func:`~kd_pyserini.reproduce.latency.probe_spec`), else
    kd-search's sidecar, else (hybrids made by kd-fuse) the sum of the fused runs', else the search's wall time."""
    lat, src = None, None
    if latency_queries > 0 and len(search_cmds) == 1:
        from kd_pyserini.resources import get_topics

        try:
            spec = probe_spec(run_file)
            if spec is not None:
                lat = probe_latency(spec, list(get_topics(matrix.topics).values()), n=latency_queries)
            src = PROBE_SOURCE.format(n=latency_queries) if lat is not None else None
        except Exception as e:  # noqa: BLE001  (timing is a bonus: never fail the reproduction over it)
            echo(f"  latency probe failed ({type(e).__name__}: {e}); using the run's sidecar")
    if lat is None:
        lat, src = sidecar_latency(run_file)
    fuse_only = all(s.program == "kd-fuse" for s in cond.steps)
    if lat is None and fuse_only and cond.depends:
        lats = [dep_latencies.get(d) for d in cond.depends]
        if all(x is not None for x in lats):
            lat, src = float(sum(x for x in lats if x is not None)), "hybrids: sum of the fused runs' latencies"
    elif lat is None and search_wall is not None and n_queries:
        lat, src = (1000.0 * search_wall / n_queries,
                    "wall time of the search command / queries (includes start-up and model loading)")
    return lat, src


def run_condition(cond: Condition, matrix: Matrix, resolver: Resolver, output_dir: Path,
                  run_paths: dict[str, Path], *, dry_run: bool = False, allow_heavy: bool = False,
                  reuse: bool = False, echo: Echo = print, planned: Iterable[str] = (),
                  dep_latencies: Mapping[str, float | None] | None = None, latency_queries: int = 100,
                  progress: bool | None = None) -> Result:
    """Check, run (unless ``dry_run``) and evaluate one condition.

    Args:
        cond: the condition.
        matrix: its matrix.
        resolver: the placeholders.
        output_dir: where run files go (``<output_dir>/<benchmark>/run.<benchmark>.<condition>.txt``).
        run_paths: run files of the benchmark's conditions produced so far (updated with this one's).
        dry_run: only check and show the commands.
        allow_heavy: allow steps marked ``heavy`` (full MS MARCO encoding).
        reuse: evaluate an existing run file instead of producing it again.
        echo: where progress lines go.
        planned: dependencies that a dry run counts as available (they would run first).
        dep_latencies: latencies (ms/query) of the dependencies; a condition made only by fusing their runs gets
            their sum (fusion itself is negligible), or none when one is unknown.
        latency_queries: queries timed one by one by :func:`~kd_pyserini.reproduce.latency.probe_latency` after a
            dense/bm25 search (0: only use what the run's sidecar records).
        progress: the children's progress bars, passed through to our stderr (``None``: on when stderr is a
            terminal, or as ``$KD_PYSERINI_PROGRESS`` says).

    Returns:
        The :class:`Result`; ``status`` is ``not runnable`` with ``problems`` when an input is missing.
    """
    output = matrix.run_file(output_dir, cond.name)
    extra = matrix.placeholders(output, run_paths)
    av = check_condition(cond, matrix, resolver, output, run_paths, allow_heavy=allow_heavy, planned=planned)
    commands = []
    for i, step in enumerate(cond.steps):
        cmd = resolver.fill(step.command, extra, partial=True)
        commands.append((f"# {av.skip_steps[i]}: " if i in av.skip_steps else "") + cmd)
    result = Result(cond, NOT_RUNNABLE, commands=commands, problems=list(av.problems))
    if not av.runnable:
        result.rows = unmeasured_rows(cond, matrix.primary, NOT_RUNNABLE, short_problem(av.problems))
        return result
    run_file = Path(resolver.fill(cond.run, extra)).expanduser()
    result.run_file = str(run_file)
    if dry_run:
        result.status = RUNNABLE
        return result
    t0 = time.perf_counter()
    search_wall = None
    logs: list[str] = []
    if cond.type != "reference-run" and not (reuse and run_file.is_file()):
        run_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if resolver.variables.get("data"):
            env["KD_PYSERINI_DATA"] = resolver.fill(resolver.variables["data"] or "")
        show = progress_enabled(progress)
        env[PROGRESS_ENV] = "1" if show else "0"
        for i, step in enumerate(cond.steps):
            if i in av.skip_steps:
                continue
            cmd = resolver.fill(step.command, extra)
            echo(f"  $ {cmd}")
            ts = time.perf_counter()
            proc = run_command(command_argv(cmd), env, forward=sys.stderr if show else None)
            took = time.perf_counter() - ts
            logs.append(f"$ {cmd}\n{proc.stdout}{proc.stderr}")
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                return _failed(result, cond, matrix, f"command failed (exit {proc.returncode}): {cmd} -> {tail}",
                               logs)
            if step.program == "kd-search":
                search_wall = (search_wall or 0.0) + took
        if not run_file.is_file():
            return _failed(result, cond, matrix, f"the commands ran but wrote no run file at {run_file}", logs,
                           per_figure=False)
    result.wall_s = time.perf_counter() - t0
    result.log = "\n".join(logs)
    measured = _evaluate_file(run_file, matrix, [e.measure for e in cond.expected])
    result.rows = compare(cond, measured, matrix.measures)
    result.status = overall_status(result.rows)
    run_paths[cond.name] = run_file
    if cond.type != "reference-run":
        from kd_pyserini.resources import get_topics

        result.n_queries = len(get_topics(matrix.topics))
        search_cmds = [resolver.fill(s.command, extra) for s in cond.steps if s.program == "kd-search"]
        result.latency_ms, result.latency_source = _latency(
            cond, matrix, search_cmds, run_file, latency_queries, dep_latencies or {}, search_wall,
            result.n_queries, echo)
    return result


def _order(matrix: Matrix, selected: Sequence[Condition]) -> list[Condition]:
    """``selected`` with their dependencies first (a dependency not selected is still run: it is needed)."""
    order: list[Condition] = []

    def add(c: Condition, stack: tuple[str, ...] = ()) -> None:
        if c in order:
            return
        if c.name in stack:
            raise MatrixError(f"{matrix.path}: dependency cycle through {c.name!r}")
        for d in c.depends:
            add(matrix.condition(d), (*stack, c.name))
        order.append(c)
    for c in selected:
        add(c)
    return order


def reproduce(matrices: Sequence[Matrix], resolver: Resolver, output_dir: str | os.PathLike, *,
              conditions: Sequence[str] = (), dry_run: bool = False, allow_heavy: bool = False, reuse: bool = False,
              echo: Echo = print, latency_queries: int = 100, progress: bool | None = None) -> list[Result]:
    """Run the selected conditions of ``matrices`` (dependencies first) and return their results in matrix order.

    Args:
        matrices: the benchmarks' matrices.
        resolver: the placeholders (:func:`~kd_pyserini.reproduce.availability.build_resolver`).
        output_dir: where run files go.
        conditions: condition names or shell-style patterns (``tas-b*``); empty = all.
        dry_run: only check and list the commands.
        allow_heavy: allow steps marked ``heavy``.
        reuse: evaluate existing run files instead of producing them again.
        echo: progress output.
        latency_queries: queries timed by the latency probe per dense/bm25 condition (0: sidecar only).
        progress: the commands' progress bars on our stderr (``None``: on when stderr is a terminal).

    Raises:
        MatrixError: a pattern that matches no condition.
    """
    out = Path(output_dir)
    results: list[Result] = []
    for pat in conditions:
        if not any(fnmatch.fnmatchcase(c.name, pat) for m in matrices for c in m.conditions):
            known = sorted({c.name for m in matrices for c in m.conditions})
            raise MatrixError(f"no condition matches {pat!r}; known: {', '.join(known)}")
    for matrix in matrices:
        selected = [c for c in matrix.conditions
                    if not conditions or any(fnmatch.fnmatchcase(c.name, p) for p in conditions)]
        order = _order(matrix, selected)
        run_paths: dict[str, Path] = {}
        by_name: dict[str, Result] = {}
        for c in order:
            echo(f"[{matrix.benchmark}] {c.name}")
            # in a dry run a dependency counts as available when it is itself runnable
            planned = {d for d, r in by_name.items() if r.status == RUNNABLE}
            for d in planned:
                run_paths[d] = matrix.run_file(out, d)
            res = run_condition(c, matrix, resolver, out, run_paths, dry_run=dry_run, allow_heavy=allow_heavy,
                                reuse=reuse, echo=echo, planned=planned,
                                dep_latencies={d: by_name[d].latency_ms for d in c.depends if d in by_name},
                                latency_queries=latency_queries, progress=progress)
            if res.status == NOT_RUNNABLE:
                echo("  not runnable: " + "; ".join(res.problems))
            elif res.status == ERROR:
                echo("  error: " + "; ".join(res.problems))
            elif not dry_run:
                checked = [r for r in res.rows if r.verdict in (PASS, FAIL)]
                ok = sum(r.verdict == PASS for r in checked)
                echo(f"  {res.status}: {ok}/{len(checked)} published figures within tolerance")
            by_name[c.name] = res
        results.extend(by_name[c.name] for c in order if c in selected or by_name[c.name].status != NOT_RUNNABLE)
    return results


def evaluate_benchmark_runs(benchmark: str, output_dir: str | os.PathLike | None = None,
                            directory: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """The reproduction runs present for ``benchmark``, evaluated, beside the published numbers (``kd-eval BENCH``).

    Looks for each condition's run file: a reference run's file, or
    ``<output_dir>/<benchmark>/run.<benchmark>.<condition>.txt`` written by ``kd-repro`` (``output_dir`` defaults to
    ``$KD_PYSERINI_REPRO_OUTPUT`` or ``runs/output``). Nothing is run.

    Returns:
        ``{row: {measure: value}}`` with, per condition found, a row ``<condition>`` (measured, the matrix's
        measures) followed by ``<condition> [published]`` (its published figures), in matrix order. Empty when no
        run is present (a note goes to stderr).
    """
    matrix = load_matrices(directory, [benchmark])[0]
    out = Path(output_dir or os.environ.get("KD_PYSERINI_REPRO_OUTPUT") or (matrix.path.parent / "output"))
    resolver = build_resolver(output_dir=out)
    table: dict[str, dict[str, float]] = {}
    run_paths: dict[str, Path] = {}
    for c in matrix.conditions:
        extra = matrix.placeholders(matrix.run_file(out, c.name), run_paths)
        if resolver.missing(c.run, extra):
            continue
        path = Path(resolver.fill(c.run, extra)).expanduser()
        if not path.is_file():
            continue
        run_paths[c.name] = path
        measured = _evaluate_file(path, matrix, [e.measure for e in c.expected])
        table[c.name] = {m: v for m, v in measured.items() if not checkable(m, c.depth)}
        published = {e.measure: e.value for e in c.expected}
        if published:
            table[f"{c.name} [published]"] = published
    if not table:
        print(f"kd-eval: no reproduction runs for {matrix.benchmark} under {out}; run 'kd-repro -b "
              f"{matrix.benchmark}' first", file=sys.stderr)
    return table
