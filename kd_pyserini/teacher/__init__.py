"""``kd_pyserini.teacher``: teacher files for Margin-MSE distillation, made from training triples.

Hofstätter et al. 2020 (arXiv:2010.02666) distil from BERT_CAT cross-encoders: T1 is one BERT-Base_CAT, T2 the mean
of BERT-Base, BERT-Large and ALBERT-Large CAT scores. This package writes the files kd-train reads:

* :mod:`~kd_pyserini.teacher.mine` — triples from a first-stage run and qrels (relevant passages as positives, the
  run's top non-relevant ones as hard negatives), ``qid<TAB>pos_pid<TAB>neg_pid``;
* :mod:`~kd_pyserini.teacher.triples` — reading triples (ids or text) as unique (query, passage) pairs; writing
  teacher files;
* :mod:`~kd_pyserini.encoding.scorers` — teachers (shared with kd-train's in-batch teacher): cross-encoders
  (:mod:`kd_pyserini.encoding.cross_encoder`) and bi-encoders (their own similarity);
* :mod:`~kd_pyserini.teacher.score` — :func:`score_triples` (chunked, resumable, shardable; several teachers give
  their mean) and :func:`merge_shards`;
* :mod:`~kd_pyserini.teacher.groups` — teacher files from query groups (a candidate list, text triples, a scored
  sample) scored by a teacher, pairs chosen by :mod:`~kd_pyserini.teacher.pairs` (the distillation experiments);
* :mod:`kd_pyserini.cli.teacher` — ``kd-teacher score | mine | merge`` (also ``python -m kd_pyserini.cli.teacher``).

So: run -> ``kd-teacher mine`` -> ``kd-teacher score`` -> ``kd-train margin-mse``.
"""

from __future__ import annotations

from kd_pyserini.lazy import lazy_exports

_LAZY = {
    "mine_triples": "kd_pyserini.teacher.mine",
    "write_triples": "kd_pyserini.teacher.mine",
    "MinedTriples": "kd_pyserini.teacher.mine",
    "read_triples": "kd_pyserini.teacher.triples",
    "TripleSet": "kd_pyserini.teacher.triples",
    "write_teacher_file": "kd_pyserini.teacher.triples",
    "TeacherSpec": "kd_pyserini.encoding.scorers",
    "teacher_spec": "kd_pyserini.encoding.scorers",
    "load_scorer": "kd_pyserini.encoding.scorers",
    "score_triples": "kd_pyserini.teacher.score",
    "merge_shards": "kd_pyserini.teacher.score",
    "ScoreResult": "kd_pyserini.teacher.score",
    "parse_shard": "kd_pyserini.teacher.score",
    "choose_pairs": "kd_pyserini.teacher.pairs",
    "groups_from_candidates": "kd_pyserini.teacher.groups",
    "groups_from_text_triples": "kd_pyserini.teacher.groups",
    "groups_from_scored_jsonl": "kd_pyserini.teacher.groups",
    "score_groups": "kd_pyserini.teacher.groups",
    "write_group_teacher_file": "kd_pyserini.teacher.groups",
}

__all__ = list(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
