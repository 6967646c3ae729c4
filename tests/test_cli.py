"""The command-line layer as a whole: Java only where Lucene is used, one option vocabulary, progress on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NO_JVM = {"KD_PYSERINI_JVM_OPTIONS": "-XX:+NoSuchOption"}  # any JVM start would fail with this option


def _run(args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return _run(["-c", code], env)


# ------------------------------------------------------------------------------------------------ Java, lazily

def test_import_starts_nothing_and_pyserini_import_starts_the_jvm():
    res = _python("import sys, kd_pyserini\n"
                  "assert 'jnius' not in sys.modules and kd_pyserini.jvm.current_runtime() is None\n"
                  "import kd_pyserini.evaluation, kd_pyserini.fusion, kd_pyserini.resources, kd_pyserini.cli.eval\n"
                  "import kd_pyserini.cli.fuse, kd_pyserini.cli.train, kd_pyserini.train.trainer\n"
                  "assert 'jnius' not in sys.modules, 'a Lucene-free module started Java'\n"
                  "from pyserini.search.lucene import LuceneSearcher\n"
                  "rt = kd_pyserini.jvm.current_runtime()\n"
                  "assert rt is not None and rt.version >= 21 and kd_pyserini.JAVA is rt\n"
                  "print('ok', LuceneSearcher.__name__)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ok", "LuceneSearcher"]


def test_importing_pyserini_first_is_one_clear_error():
    res = _python("import pyserini\nimport kd_pyserini")
    assert res.returncode != 0
    assert "put 'import kd_pyserini' before any pyserini import" in res.stderr


def test_a_broken_jvm_option_breaks_lucene_only():
    res = _python("import kd_pyserini\nfrom pyserini.search.lucene import LuceneSearcher", NO_JVM)
    assert res.returncode != 0  # proves the option really makes every JVM start fail


def test_kd_eval_and_kd_fuse_run_without_java(tmp_path: Path, data_dir: Path):
    runs = data_dir / "msmarco-dl" / "runs"
    bm25, tasb = runs / "run.dl19.bm25-default.top100.txt", runs / "run.dl19.tas-b.top100.txt"
    env = {**NO_JVM, "KD_PYSERINI_DATA": str(data_dir)}
    res = _run(["-m", "kd_pyserini.cli.eval", "trec-dl-19", str(tasb)], env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1].split()[1] == "0.7210"
    fused = tmp_path / "fused.txt"
    res = _run(["-m", "kd_pyserini.cli.fuse", str(bm25), str(tasb), "--tune-on", "dl19-passage", "-o", str(fused)],
               env)
    assert res.returncode == 0, res.stderr
    assert fused.is_file() and "chose rrf_k=" in res.stderr


def test_kd_train_runs_without_java(tmp_path: Path, tiny_distilbert_dir: Path, data_dir: Path):
    teacher = data_dir / "kd-samples" / "msmarco-10q-teacher-scores.jsonl"
    out = tmp_path / "student"
    res = _run(["-m", "kd_pyserini.train", "margin-mse", "--teacher", str(teacher), "--student",
                str(tiny_distilbert_dir), "-o", str(out), "--max-steps", "2", "--batch-size", "4", "--save-every",
                "0", "--query-max-length", "8", "--passage-max-length", "16", "--no-progress"], NO_JVM)
    assert res.returncode == 0, res.stderr
    assert (out / "config.json").is_file() and "trained 2 steps" in res.stdout
    # --no-progress silences third-party bars too (transformers' "Writing model shards", "Loading weights")
    assert "Writing" not in res.stderr and "Loading" not in res.stderr and "it/s" not in res.stderr


# ------------------------------------------------------------------------------------------------ vocabulary

COMMANDS = {
    "kd_pyserini.cli.fuse": ["--output", "--hits", "--run-tag", "--measures", "--progress / --no-progress",
                             "--alpha"],
    "kd_pyserini.cli.eval": ["--measures", "--significance-level"],
    "kd_pyserini.train margin-mse": ["--output", "--measures", "--query-max-length", "--passage-max-length",
                                     "--batch-size", "--progress / --no-progress"],
    "kd_pyserini.train tas-b": ["--output", "--measures", "--query-max-length", "--passage-max-length",
                                "--batch-size", "--progress / --no-progress"],
    "kd_pyserini.cli.teacher score": ["--output", "--query-max-length", "--passage-max-length", "--batch-size",
                                      "--progress / --no-progress"],
}
FORBIDDEN = {  # old spellings stay accepted (with a warning) but are no longer shown
    "kd_pyserini.cli.fuse": ["--k ", "--tag ", "--metric"],
    "kd_pyserini.cli.eval": ["--alpha"],
    "kd_pyserini.train margin-mse": ["--validation-measures"],
    "kd_pyserini.train tas-b": ["--validation-measures"],
    "kd_pyserini.cli.teacher score": [],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_shows_the_one_vocabulary(command: str):
    module, *sub = command.split()
    res = _run(["-m", module, *sub, "--help"], NO_JVM, timeout=120)
    assert res.returncode == 0, res.stderr
    for option in COMMANDS[command]:
        assert option in res.stdout, f"{command} --help lacks {option}"
    for option in FORBIDDEN[command]:
        assert option not in res.stdout, f"{command} --help still shows {option}"


def test_no_module_outside_cli_imports_click():
    offenders = []
    for path in (ROOT / "kd_pyserini").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "kd_pyserini").parts[:1]:
            continue
        text = path.read_text(encoding="utf-8")
        if "import click" in text or "from click" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_no_module_of_the_package_is_over_600_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
             for p in (ROOT / "kd_pyserini").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 600} == {}


def test_no_import_cycles_in_the_tree():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from import_graph import find_cycles
    finally:
        sys.path.pop(0)
    assert find_cycles(ROOT, ["kd_pyserini", "tools"]) == []


def test_one_line_keeps_quotes_inside_messages_and_drops_keyerror_quoting():
    from kd_pyserini.errors import one_line

    assert one_line(OSError("'org/model' is not cached; use 'all-minilm-l6-v2'\nmore")) == \
        "'org/model' is not cached; use 'all-minilm-l6-v2'"
    assert one_line(KeyError("unknown benchmark 'x'")) == "unknown benchmark 'x'"
    assert one_line(ValueError("")) == "ValueError"


def test_options_module_exports_only_what_it_defines_and_no_dead_exit_helper():
    """kd_pyserini.cli.options: every name in __all__ exists, and the unused echo_error_and_exit (a second, untested
    way to print an error and exit, beside KdCommand's one-line errors) is gone (#17)."""
    from kd_pyserini.cli import options

    assert all(hasattr(options, name) for name in options.__all__)
    assert not hasattr(options, "echo_error_and_exit")
    assert "sys.exit" not in Path(options.__file__).read_text(encoding="utf-8")
