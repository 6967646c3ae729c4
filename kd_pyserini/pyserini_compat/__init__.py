"""Everything that differs between Pyserini 1.6 (Python 3.11, Anserini 1.7.1, Lucene 9) and Pyserini 2.x (>= 2.4,
Python >= 3.12, Anserini 2.3, Lucene 10, transformers 5), in one place: no other module of kd_pyserini branches on
the Pyserini version.

Importing this package imports nothing from ``pyserini`` (standard library only; no JVM). It reads the installed
version from the package metadata; its patches reach Pyserini's modules through an import hook
(:func:`prepare_import`) that runs when they are first imported, or in place when they are already loaded.
kd_pyserini's JVM start (:mod:`kd_pyserini.jvm`) uses :func:`jvm_options` and :func:`openai_key_required_at_import`
and then calls :func:`prepare_import` and :func:`install_local_topics_and_qrels`, before any Pyserini module runs.

The differences (source files relative to the installed ``pyserini`` package, line numbers of 1.6.0 / 2.4.0), and
what handles each:

1. JVM options (``version.jvm_options``): 1.6 ``setup.py:27-41`` adds only ``--add-modules=jdk.incubator.vector``;
   2.x ``_jvm.py:29-52`` also ``--enable-native-access=ALL-UNNAMED`` and, unless ``$PYSERINI_VERBOSE_JVM``,
   ``-Djava.util.logging.config.file=resources/jars/logging.properties`` and ``-Dslf4j.internal.verbosity=WARN``.
2. Jar: ``resources/jars/anserini-1.7.1-fatjar.jar`` (Lucene 9.9.1) vs ``anserini-2.3.0-fatjar.jar`` (Lucene 10.5.0):
   same glob and ``$ANSERINI_CLASSPATH``, both Java 21 class files (documented only: a Lucene index written under 2.x
   cannot be opened by 1.6, ``indexCreatedVersionMajor is in the future: 10``; 2.x opens 1.6's).
3. OpenAI client at import (``version.openai_key_required_at_import``): 1.6 ``encode/_openai.py:27-30`` (module
   level, so ``import pyserini.encode`` needs ``$OPENAI_API_KEY``); 2.x ``encode/_openai.py:69-71`` (constructor).
4. Prebuilt-index tables fetched from GitHub at import (``metadata``, ``import_hook``): 2.x
   ``prebuilt_index_info.py:20,22,48-118,259-273`` (1.6: static dicts) - offline every ``pyserini.util`` import
   raised ``URLError``. Offline, without a saved copy, the tables hold only the entries kd_pyserini ships in
   ``prebuilt_indexes.json`` (the MS MARCO v1 passage BM25, TAS-B and Margin-MSE indexes of ``runs/``; same
   tarballs and md5s on both lines), so kd-repro finds those indexes in Pyserini's cache on 2.x too.
5. Topics/qrels registry fetched from castorini/eval (``metadata``, ``topics_and_qrels.patch_base_2x``): 2.x
   ``search/_base.py:34-69,104-127,146-248``; 1.6 ``search/_base.py:34-37,69-905,908-987`` (Anserini's Java enums).
6. Canonical names renamed in 2.x (``msmarco-passage.dev-subset``, ``beir-v1.0.0-scifact.test``, ``dl20``); the 1.6
   names are aliases there (``local_files.local_registry`` derives the same aliases offline; on 1.6 the 2.x names
   resolve from the local files).
7. Where a topics/qrels file is found (``topics_and_qrels``, ``import_hook.install_local_topics_and_qrels``): 1.6 in
   Java (Anserini 1.7.1 ``TopicReader.getTopicPath`` / ``RelevanceJudgments.getQrelsPath``, called from
   ``search/_base.py:923,975``), whose download URL no longer exists upstream; 2.x in Python
   (``search/_base.py:96-127``). Local files come first on both lines.
8. Cache home and folders (``local_files.pyserini_cache_home``, ``pyserini_cache_dirs``): 1.6 ``util.py:248-252``;
   2.x ``util.py:283-300`` (``<cwd>/.cache/pyserini`` when ``<cwd>/.cache`` exists; downloads in ``topics/`` and
   ``qrels/`` instead of ``topics-and-qrels/``).
9. ``QueryEncoder`` keyword and attributes (``encoders``): 1.6 ``encode/_base.py:42-74`` ``encoded_query_dir``,
   ``has_encoded_query``; 2.x ``encode/_base.py:89-128`` ``encoded_queries_dir``, ``has_encoded_queries``.
10. Unchanged, verified: the encoder class maps (``encode/__init__.py:55,75``; ``encoders.encoder_class_maps``), the
    keyword arguments ``search.faiss`` passes to encoder classes, ``FaissSearcher``, ``LuceneSearcher``,
    ``LuceneIndexReader``, Anserini ``IndexCollection``, ``eval.trec_eval``.
11. Topics from a file (``topics_and_qrels.load_topics_from_file``): 1.6 ``search/_base.py:940-958``
    ``get_topics_with_reader(reader, file)``; 2.x ``search/_base.py:186-192`` ``load_topics_from_file(file, reader)``;
    the Java method behind it swapped its two arguments.
12. Anserini 2.3's Java registries ``Topics.get`` / ``Qrels.get`` fetch castorini/eval's JSON with no cache
    (documented only: Pyserini 2.x never uses them; ``local_files.seed_anserini_cache`` helps Java-only consumers
    on 1.6).
13. String encoders (``faiss_encoders``, both lines): ``FaissSearcher._init_encoder_from_str`` (1.6
    ``search/faiss/_searcher.py:350``, 2.4 ``:353``) never reaches kd_pyserini's encoders; patched so kd cards,
    students and kd indexes resolve there (Pyserini's own strings unchanged).
14. Servers, 2.x only (``server``): ``server/config.py`` ``_parse_indexes`` (kd dense entries completed from their
    metadata) and ``server/backend.py`` ``SharedSearchBackend`` (configured aliases opened without
    ``--no-prebuilt-indexes`` too, ``backend.py:386``; open failures logged). 1.6 has no ``server`` package.

Modules: :mod:`.version` (1-3), :mod:`.local_files` (6, 8, local folders and registry), :mod:`.metadata` (4, 5:
offline metadata and the one warning), :mod:`.topics_and_qrels` (5, 7, 11), :mod:`.import_hook` (the hook and
:func:`install_local_topics_and_qrels`), :mod:`.encoders` (9, 10), :mod:`.faiss_encoders` (13), :mod:`.server` (14).
"""

from __future__ import annotations

from kd_pyserini.pyserini_compat.encoders import (encoded_queries_keyword, encoder_class_maps, has_encoded_queries,
                                                   pop_encoded_queries_dir, query_encoder_base_kwargs)
from kd_pyserini.pyserini_compat.import_hook import install_local_topics_and_qrels, prepare_import
from kd_pyserini.pyserini_compat.local_files import (anserini_topics_and_qrels_dirs, local_topics_and_qrels_dirs,
                                                      pyserini_cache_dirs, pyserini_cache_home, seed_anserini_cache)
from kd_pyserini.pyserini_compat.metadata import PyseriniOfflineWarning, offline_report
from kd_pyserini.pyserini_compat.topics_and_qrels import load_topics_from_file
from kd_pyserini.pyserini_compat.version import (is_pyserini2, jvm_options, openai_key_required_at_import,
                                                  pyserini_dir, pyserini_version)

__all__ = ["PyseriniOfflineWarning", "pyserini_version", "is_pyserini2", "pyserini_dir", "jvm_options",
           "openai_key_required_at_import", "prepare_import", "install_local_topics_and_qrels",
           "local_topics_and_qrels_dirs", "pyserini_cache_home", "pyserini_cache_dirs",
           "anserini_topics_and_qrels_dirs", "seed_anserini_cache", "encoder_class_maps", "encoded_queries_keyword",
           "pop_encoded_queries_dir", "query_encoder_base_kwargs", "has_encoded_queries", "load_topics_from_file",
           "offline_report"]
