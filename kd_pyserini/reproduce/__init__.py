"""The reproduction matrix — run what this machine has, compare with the published numbers (``kd-repro``).

The matrix lives in the top-level ``runs/`` folder, one YAML file per benchmark (``msmarco-dev``, ``trec-dl-19``,
``trec-dl-20``, ``scifact``), in the spirit of Pyserini's two-click reproductions (2CR): every *condition* (BM25,
TAS-B / Margin-MSE dense retrieval, re-ranking, hybrid, Pyserini's own reference runs) carries the exact commands
that produce its run and the expected scores with their source and tolerance. ``runs/README.md`` describes the
format.

For each selected condition :func:`reproduce`

1. fills the placeholders of its commands (``${msmarco_collection}``, ``${index_root}``, ``${tasb_index}``...) from
   the defaults (:data:`DEFAULT_PATHS`), a YAML file of local paths and the caller's overrides
   (:func:`build_resolver`);
2. checks, **without downloading anything**, that its inputs exist (:func:`check_condition`): files and folders by
   existence, Pyserini prebuilt indexes in Pyserini's cache, model weights as a local directory, an installed
   package or in the local Hugging Face cache; topics and qrels in ``$KD_PYSERINI_DATA`` or Pyserini's cache;
3. runs the commands (``kd-index`` / ``kd-search`` / ``kd-fuse``, each as ``python -m`` of its module) or, for a
   reference run, evaluates the given run file directly;
4. evaluates the run with :func:`kd_pyserini.evaluation.evaluate` (``trec_eval -c``) and compares every published
   figure within its tolerance (:func:`compare`), and times dense/BM25 searches (:func:`probe_latency`).

A condition whose inputs are missing is reported as **not runnable**, with exactly what is missing; it is never
reported as passed. A run of depth ``d`` (e.g. Pyserini's top-100 reference runs) can only check measures whose
cut-off is at most ``d``: ``R@1000`` or ``AP`` on a top-100 run is marked *not checkable*, not failed.

:func:`write_leaderboard` writes ``leaderboard.md``, ``leaderboard.json`` and ``efficiency.png`` (query latency vs
nDCG@10 / RR@10, as the Margin-MSE paper's figure). The command is :mod:`kd_pyserini.cli.repro` (``kd-repro``,
``python -m kd_pyserini.cli.repro``). ``kd-eval BENCHMARK`` without run files calls
:func:`evaluate_benchmark_runs`.

Modules: :mod:`~kd_pyserini.reproduce.matrix` (schema, loader, placeholders), :mod:`~.availability` (offline
checks), :mod:`~.verdicts` (rows and verdicts), :mod:`~.runner` (running the commands), :mod:`~.latency`,
:mod:`~.report` (leaderboard), :mod:`~.plot` (efficiency plot). No module here imports click or a command: the
matrix's commands are run as a user runs them, and the latency probe rebuilds a search from the
:class:`~kd_pyserini.search.spec.SearchSpec` its run's sidecar records.
"""

from __future__ import annotations

from kd_pyserini.reproduce.availability import (Availability, build_resolver, check_condition, file_problem,
                                                index_problem, model_problem, prebuilt_index_path, prebuilt_info)
from kd_pyserini.reproduce.latency import PROBE_SOURCE, probe_latency, probe_spec, sidecar_latency
from kd_pyserini.reproduce.matrix import (COMMAND_MODULES, CONDITION_TYPES, DEFAULT_PATHS, INDEX_VARIABLES, Condition,
                                          Expected, Matrix, MatrixError, Resolver, Step, load_matrices, load_matrix,
                                          matrix_dir)
from kd_pyserini.reproduce.plot import plot_efficiency
from kd_pyserini.reproduce.report import leaderboard_json, leaderboard_markdown, write_leaderboard
from kd_pyserini.reproduce.runner import (Completed, command_argv, evaluate_benchmark_runs, reproduce, run_command,
                                          run_condition)
from kd_pyserini.reproduce.verdicts import (ERROR, FAIL, NO_REFERENCE, NOT_CHECKABLE, NOT_RUNNABLE, PASS, RUNNABLE,
                                            Result, Row, checkable, compare, overall_status)

__all__ = [
    # matrix
    "DEFAULT_PATHS", "INDEX_VARIABLES", "COMMAND_MODULES", "CONDITION_TYPES", "MatrixError", "Expected", "Step",
    "Condition", "Matrix", "load_matrix", "load_matrices", "matrix_dir", "Resolver",
    # availability
    "prebuilt_info", "prebuilt_index_path", "model_problem", "index_problem", "file_problem", "Availability",
    "check_condition", "build_resolver",
    # verdicts
    "PASS", "FAIL", "NOT_CHECKABLE", "NO_REFERENCE", "NOT_RUNNABLE", "ERROR", "RUNNABLE", "Row", "Result",
    "checkable", "compare", "overall_status",
    # running
    "Completed", "command_argv", "run_command", "run_condition", "reproduce", "evaluate_benchmark_runs",
    # latency
    "probe_spec", "probe_latency", "sidecar_latency", "PROBE_SOURCE",
    # outputs
    "leaderboard_markdown", "leaderboard_json", "write_leaderboard", "plot_efficiency",
]
