"""Students that publish: a Hugging Face model card (``README.md``) in every folder ``kd-train`` saves, and
``kd-train export`` to a folder that ``huggingface-cli upload`` publishes as is.

The card (:func:`model_card_text`) is written from what the folder and its run already hold, nothing else:

* the folder: ``kd_pyserini_card.toml`` (architecture, pooling, similarity, lengths, dimension), ``config.json``
  (layers, hidden size) and ``kd_pyserini_train.json`` (step, recipe, teacher file, in-batch teacher, and for
  ``best/`` the validation figures that made it best);
* the run folder (the checkpoint's parent, or the output folder itself for the final model): ``training_args.json``
  (every option, the teacher data's summary) and ``train_log.csv`` (the validation figures measured up to the
  folder's step).

YAML front matter (language, license only when given, library, pipeline tag, tags, datasets, base model), then:
model, training (recipe, steps, teachers with their key), the measured validation table, usage (kd_pyserini,
Pyserini, plain transformers), the ``kd-train`` command that reproduces it, and the Margin-MSE and TAS-B citations.
Nothing is hard-coded about results: a run without validation says so.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from kd_pyserini.atomic import atomic_write, replace_dir, temp_dir_for
from kd_pyserini.cards import CARD_FILENAME
from kd_pyserini.errors import KdError, UsageError

__all__ = ["MODEL_CARD", "TRAIN_INFO", "model_card_text", "write_model_card", "export_student", "ExportError",
           "reproduce_command", "CITATIONS"]

log = logging.getLogger(__name__)
MODEL_CARD = "README.md"
TRAIN_INFO = "kd_pyserini_train.json"
#: what a published student folder holds (besides tokenizer files): the weights, config, kd card and model card.
EXPORTED = ("config.json", "model.safetensors", CARD_FILENAME, MODEL_CARD, TRAIN_INFO)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "added_tokens.json", "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")
#: options of the run that say nothing about the model (where and how it ran), left out of the reproduce command.
_NOT_REPRODUCED = ("output", "resume", "overwrite", "force", "progress", "cpu_threads", "log_csv", "log_every",
                   "tensorboard", "device")

CITATIONS = {
    "margin-mse": """@article{hofstaetter2020_crossarchitecture_kd,
  title = {Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
  author = {Sebastian Hofst{\\"a}tter and Sophia Althammer and Michael Schr{\\"o}der and Mete Sertkan and
            Allan Hanbury},
  journal = {arXiv:2010.02666},
  year = {2020}
}""",
    "tas-b": """@inproceedings{hofstaetter2021_tasb_dense_retrieval,
  title = {Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling},
  author = {Sebastian Hofst{\\"a}tter and Sheng-Chieh Lin and Jheng-Hong Yang and Jimmy Lin and Allan Hanbury},
  booktitle = {Proceedings of SIGIR},
  year = {2021}
}""",
}


class ExportError(KdError, ValueError):
    """A folder cannot be exported (not a kd-train model folder, or the destination holds other files)."""


# ------------------------------------------------------------------------------------------------ reading

def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def run_dir_of(folder: Path) -> Path:
    """The training run a model folder belongs to: itself for the final model (it holds ``training_args.json``),
    else its parent (``checkpoint-N/``, ``best/``)."""
    return folder if (folder / "training_args.json").is_file() else folder.parent


def _validations(run_dir: Path, args: dict[str, Any], step: int | None,
                 info: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(measures, rows)``: the validation figures measured up to ``step`` (``train_log.csv``), plus the folder's
    own (``best/`` records them in ``kd_pyserini_train.json``)."""
    measures = [str(m) for m in args.get("validation_measures") or ()]
    log_csv = Path(args["log_csv"]) if args.get("log_csv") else run_dir / "train_log.csv"
    rows: dict[int, dict[str, Any]] = {}
    try:
        with open(log_csv, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                values = {m: r.get(f"val_{m}") for m in measures}
                if not str(r.get("step", "")).isdigit() or not any(values.values()):
                    continue
                s = int(r["step"])
                if step is None or s <= step:
                    rows[s] = {"step": s, **{m: float(v) for m, v in values.items() if v}}
    except (OSError, ValueError):
        pass
    own = info.get("validation")
    if isinstance(own, dict) and step is not None:
        rows[step] = {"step": step, **{k: float(v) for k, v in own.items() if isinstance(v, (int, float))}}
        measures = measures or list(own)
    return measures, [rows[s] for s in sorted(rows)]


@cache
def _in_batch_key(name: str, scale: float | str, qlen: int | None, plen: int | None) -> dict[str, Any] | None:
    try:
        from kd_pyserini.train.in_batch_teacher import in_batch_teacher_key

        return in_batch_teacher_key(name, scale, qlen, plen)
    except (OSError, ValueError) as e:
        log.warning("model card: no key for the in-batch teacher %s (%s)", name, e)
        return None


def reproduce_command(args: dict[str, Any], output: str = "OUTPUT") -> str:
    """The ``kd-train`` command line that trains the same model (``args``: ``training_args.json``): the recipe's
    command plus every model-relevant option that differs from the preset's value (the options are
    :class:`~kd_pyserini.train.config.TrainConfig`'s fields, as ``kd-train`` generates them)."""
    from dataclasses import MISSING, fields

    from kd_pyserini.train.config import PRESETS, TrainConfig

    recipe = str(args.get("recipe") or "margin-mse")
    preset = PRESETS.get(recipe, PRESETS["margin-mse"])
    parts = ["kd-train", preset.name]
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in _NOT_REPRODUCED or f.name not in args:
            continue
        value, default = args[f.name], preset.default(f.name, f.default)
        if f.name == "validation_measures":
            if not args.get("validation_candidates"):
                continue
            value, default = ",".join(value or ()), ",".join(default)
        flag = meta.get("flag") or f"--{f.name.replace('_', '-')}"
        flag = max((flag,) if isinstance(flag, str) else flag, key=len)
        if meta.get("kind") == "flag":
            if value:
                parts.append(flag)
            continue
        if value is None or (default is not MISSING and (value == default or str(value) == str(default))):
            continue
        parts += [flag, _quote(str(value))]
    parts += ["--output", _quote(output)]
    return " ".join(parts)


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


# ------------------------------------------------------------------------------------------------ the card

def _yaml_list(key: str, values: list[str]) -> list[str]:
    return [f"{key}:", *(f"- {json.dumps(v)}" for v in values)] if values else []


def _datasets(args: dict[str, Any], info: dict[str, Any]) -> list[str]:
    text = " ".join(str(x).lower() for x in (args.get("teacher"), args.get("collection"), args.get("queries"),
                                             args.get("validation_qrels"), args.get("validation_candidates"),
                                             info.get("teacher")) if x)
    marks = ("msmarco", "ms_marco", "ms-marco", "dl19", "dl20", "trec-dl", "collection.tsv", "queries.train")
    return ["microsoft/ms_marco"] if any(m in text for m in marks) else []


def _hub_id(name: str | None) -> str | None:
    """``name`` when it looks like a hub id (``owner/model``, not a local path), else ``None``."""
    if not name or name.startswith(("/", ".", "~")) or name.count("/") != 1 or Path(name).exists():
        return None
    return name


def _size(path: Any) -> str:
    try:
        return f"{Path(str(path)).stat().st_size} bytes, " if path else ""
    except OSError:
        return ""


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


_PAIR_WORDS = {"bert-cat": ("BERT_CAT", "query and passage are read together, `[CLS] query [SEP] passage [SEP]`, and "
                                       "one linear layer scores the first vector"),
               "colbert": ("ColBERT", "query (with 8 `[MASK]` tokens) and passage are encoded apart into compressed "
                                      "token vectors, scored by the sum over query tokens of the best dot product "
                                      "with a passage token (MaxSim)"),
               "prettr": ("PreTTR", "query and passage run the lower layers apart, the upper layers together; one "
                                    "linear layer scores the first vector")}


def _pair_intro(title: str, arch: str, card: dict[str, Any], layers: Any, hidden: Any, qlen: Any, plen: Any
                ) -> list[str]:
    """The title, description and model table of a BERT_CAT / ColBERT / PreTTR student (a re-ranker)."""
    name, how = _PAIR_WORDS.get(arch, (arch, "a pair-scoring re-ranker"))
    extra = (f"compression dimension {card.get('compression_dim')}" if arch == "colbert" else
             f"split at layer {card.get('join_layer_idx')}" if arch == "prettr" else
             f"pair max length {card.get('max_length')}")
    return [f"# {title}", "",
            f"A **{name}** re-ranker distilled with **Margin-MSE** by kd_pyserini's `kd-train --architecture {arch}` "
            f"(Hofstätter et al. 2020): {how}. Saved in the layout of the published checkpoints, with a "
            f"`{CARD_FILENAME}` (kind `{card.get('kind')}`).", "",
            "## Model", "", "| architecture | layers | hidden size | query max length | passage max length | |",
            "|---|---|---|---|---|---|", f"| {name} | {layers or '?'} | {hidden or '?'} | {qlen} | {plen} | {extra} |",
            ""]


def model_card_text(folder: str | os.PathLike, *, run_dir: str | os.PathLike | None = None, name: str | None = None,
                    repo_id: str | None = None, license: str | None = None) -> str:
    """The ``README.md`` model card of a kd-train model folder (see the module docstring).

    Args:
        folder: the model folder (``checkpoint-N/``, ``best/``, or the output folder's final model).
        run_dir: the training run's folder [:func:`run_dir_of`].
        name: the model's name in the title [the folder's name; the run's for the final model].
        repo_id: the hub id it will be published under (used in the usage examples) [a placeholder].
        license: a license identifier for the front matter (left out when not given: only the author knows it).
    """
    folder = Path(folder)
    run = Path(run_dir) if run_dir is not None else run_dir_of(folder)
    card = _toml(folder / CARD_FILENAME)
    info = _json(folder / TRAIN_INFO)
    args = _json(run / "training_args.json")
    config = _json(folder / "config.json")
    recipe = str(info.get("loss") or args.get("recipe") or "margin-mse")
    step = info.get("step") if isinstance(info.get("step"), int) else None
    title = name or card.get("name") or folder.resolve().name
    where = repo_id or f"OWNER/{title}"
    student = str(info.get("student") or args.get("student") or "")
    base = _hub_id(student)
    layers = config.get("n_layers") or config.get("num_hidden_layers")
    hidden = config.get("dim") or config.get("hidden_size")
    arch = card.get("architecture") or config.get("model_type") or "?"
    pooling, similarity = card.get("pooling", "cls"), card.get("similarity", "dot")
    qlen, plen = card.get("query_max_length"), card.get("passage_max_length")
    in_batch = info.get("in_batch_teacher") or args.get("in_batch_teacher")
    tags = ["kd_pyserini", "dense-retrieval", "knowledge-distillation", "sentence-similarity" if similarity ==
            "cosine" else "bert_dot", "tas-b" if recipe == "tas-b" else "margin-mse", "pyserini"]

    front = ["---", "language:", "- en", *([f"license: {license}"] if license else []),
             "library_name: transformers", "pipeline_tag: feature-extraction", *_yaml_list("tags", tags),
             *_yaml_list("datasets", _datasets(args, info)), *([f"base_model: {base}"] if base else []), "---", ""]
    pair = str(info.get("architecture") or args.get("architecture") or "bert-dot") != "bert-dot"
    if pair:  # BERT_CAT, ColBERT, PreTTR: a re-ranker card, no pooling or similarity
        qlen = card.get("query_max_length") or qlen or args.get("query_max_length")
        plen = card.get("passage_max_length") or plen or args.get("passage_max_length")
        tags[3] = str(info.get("architecture"))
    body = _pair_intro(title, str(info.get("architecture")), card, layers, hidden, qlen, plen) if pair else [
            f"# {title}", "",
            f"A dense retriever distilled with **{'TAS-B' if recipe == 'tas-b' else 'Margin-MSE'}** by "
            "kd_pyserini's `kd-train` (a Pyserini plugin): one encoder for queries and passages, "
            f"{pooling.upper() if pooling == 'cls' else pooling} pooling, "
            f"{'dot product' if similarity == 'dot' else 'cosine similarity'} (BERT_Dot when CLS and dot).", "",
            "## Model", "",
            "| architecture | layers | hidden size | pooling | similarity | dimension | query max length | "
            "passage max length |", "|---|---|---|---|---|---|---|---|",
            f"| {arch} | {layers or '?'} | {hidden or '?'} | {pooling} | {similarity} | "
            f"{card.get('dimension', hidden or '?')} | {qlen} | {plen} |", "",
            f"Similarity is computed on the {'CLS vector' if pooling == 'cls' else 'mean of the token vectors'}"
            f"{' after L2 normalisation' if similarity == 'cosine' else ' as is (no normalisation)'}; queries are "
            f"cut at {qlen} tokens and passages at {plen}, as in training. `{CARD_FILENAME}` records this for "
            "kd_pyserini.", ""]

    data = args.get("data") or {}
    total = args.get("total_steps")
    body += ["## Training", "",
             f"- Recipe: `{recipe}` ({'Margin-MSE + TAS-balanced batches + in-batch term' if recipe == 'tas-b' else 'Margin-MSE'}),"
             f" loss on teacher margins; sampling `{info.get('sampling') or args.get('sampling')}`, in-batch weight "
             f"{info.get('in_batch_weight', args.get('in_batch_weight'))}.",
             f"- Steps: {step if step is not None else '?'}" + (f" of {total}" if total else "") +
             f"; batch size {args.get('batch_size', '?')} x {args.get('world_size', 1)} process(es) x gradient "
             f"accumulation {args.get('grad_accum', 1)}; learning rate {args.get('lr', '?')} (AdamW, warm-up "
             f"{args.get('warmup_steps', '?')} steps, linear decay); seed {args.get('seed', '?')}; precision "
             f"{args.get('precision', '?')}.",
             f"- Student initialised from: `{student or '?'}`" +
             (f" (keeping {args['student_layers']} layers)" if args.get("student_layers") else "") + ".",
             f"- Teacher scores: `{Path(str(info.get('teacher') or args.get('teacher') or '?')).name}`"
             + (f" ({data.get('format')}, {data.get('triples')} triples, {_size(data.get('path'))}teacher margin mean "
                f"{_fmt(data.get('margin_mean'))}, std {_fmt(data.get('margin_std'))})" if data else "") + "."]
    if in_batch:
        raw = args.get("in_batch_teacher_scale")
        scale: float | str = "auto" if str(raw).strip().lower() == "auto" else float(raw or 1.0)
        key = _in_batch_key(str(in_batch), scale, qlen, plen)
        fitted = info.get("in_batch_teacher_scale_fitted")
        body.append(f"- In-batch teacher: `{in_batch}`, key `{json.dumps(key, sort_keys=True)}`"
                    + (f"; scale fitted to the teacher file's margins: {_fmt(fitted)}" if scale == "auto"
                       and isinstance(fitted, (int, float)) else "") + ".")
    if info.get("final"):
        body.append(f"- This is the final model of the run"
                    + (f"; the best validation was at step {info['best_step']} (`best/`)."
                       if info.get("best_step") is not None else "."))
    body.append("")

    measures, rows = _validations(run, args, step, info)
    body += ["## Effectiveness (measured during training)", ""]
    if rows:
        qrels, cand = args.get("validation_qrels"), args.get("validation_candidates")
        n = args.get("validation_max_queries")
        body += [f"Re-ranking `{Path(str(cand)).name if cand else '?'}` with this encoder, judged by `{qrels}`"
                 + (f" (first {n} judged queries)" if n else "") + " (kd_pyserini's evaluation, ir_measures "
                 "definitions). The row of this model is in bold.", "",
                 "| step | " + " | ".join(measures) + " |", "|---|" + "---|" * len(measures)]
        for r in rows:
            cells = [_fmt(r.get(m, "")) for m in measures]
            mark = "**" if r["step"] == step else ""
            body.append(f"| {mark}{r['step']}{mark} | " + " | ".join(f"{mark}{c}{mark}" for c in cells) + " |")
        body.append("")
    else:
        body += ["No validation was run (kd-train's `--validation-candidates` and `--validation-qrels` measure it "
                 "during training); evaluate the model with `kd-index dense` + `kd-search` before relying on it.",
                 ""]

    if pair:
        body += ["## Usage", "", "```python", "from kd_pyserini.encoding.rerankers import load_reranker",
                 f'reranker = load_reranker("{where}")  # or the downloaded folder',
                 'scores = reranker.score("what is the capital of france", ["Paris is the capital.", "Lyon."])',
                 "```", "", f"Re-rank a run with `kd-search --mode rerank --reranker {where} ...`.", ""]
    pool_code = ("out.last_hidden_state[:, 0]" if pooling == "cls" else
                 "(out.last_hidden_state * mask).sum(1) / mask.sum(1)")
    norm_code = ["vecs = torch.nn.functional.normalize(vecs, dim=-1)"] if similarity == "cosine" else []
    body += [] if pair else ["## Usage", "", "```python", "import kd_pyserini",
             f'encoder = kd_pyserini.get_query_encoder("{where}")  # or the downloaded folder',
             'vector = encoder.encode("what is the capital of france")', "```", "",
             "With Pyserini (after `import kd_pyserini`): `FaissSearcher(index_dir, \"FOLDER\")`, or build an index "
             "with `kd-index dense --encoder FOLDER`. With plain transformers:", "", "```python", "import torch",
             "from transformers import AutoModel, AutoTokenizer",
             f'tok = AutoTokenizer.from_pretrained("{where}")',
             f'model = AutoModel.from_pretrained("{where}").eval()',
             f'batch = tok(["what is the capital of france"], truncation=True, max_length={qlen}, padding=True, '
             'return_tensors="pt")',
             "with torch.inference_mode():", "    out = model(**batch)",
             '    mask = batch["attention_mask"].unsqueeze(-1).float()',
             f"    vecs = {pool_code}", *(f"    {c}" for c in norm_code),
             "```", "", f"Passages: the same with `max_length={plen}`.", ""]
    if args:
        body += ["## Reproduce", "", "```bash", reproduce_command(args), "```", "",
                 "(paths are those of the original run; `--student` is the starting model)", ""]
    cites = [CITATIONS["margin-mse"]] + ([CITATIONS["tas-b"]] if recipe == "tas-b" or in_batch else [])
    if recipe != "tas-b" and not in_batch:
        cites.append(CITATIONS["tas-b"])  # the BERT_Dot setting the seed models share
    body += ["## Citation", "", "```bibtex", "\n\n".join(cites), "```", ""]
    return "\n".join(front + body)


def write_model_card(folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`model_card_text` as ``folder/README.md`` (under a temporary name, then renamed)."""
    out = Path(folder) / MODEL_CARD
    text = model_card_text(folder, **kwargs)
    with atomic_write(out) as f:
        f.write(text)
    return out


# ------------------------------------------------------------------------------------------------ export

def _model_folder(src: Path) -> Path:
    if not src.is_dir():
        raise ExportError(f"{src} is not a folder; give a kd-train output folder, a checkpoint-N folder or best/")
    if not (src / "config.json").is_file() or not any((src / w).is_file() for w in
                                                       ("model.safetensors", "pytorch_model.bin")):
        raise ExportError(f"{src} holds no model (config.json and model.safetensors); give a kd-train output "
                          "folder, a checkpoint-N folder or best/")
    return src


def export_student(src: str | os.PathLike, dest: str | os.PathLike, *, repo_id: str | None = None,
                   name: str | None = None, license: str | None = None, overwrite: bool = False) -> Path:
    """Copy a kd-train model folder to ``dest`` in the layout the hub expects, ready for
    ``huggingface-cli upload REPO dest``: ``config.json``, ``model.safetensors``, the tokenizer files, the kd card
    (its ``name``/``model_id`` set to the published name) and a fresh ``README.md`` model card. Optimizer state and
    logs are left out. ``dest`` is built beside itself and renamed into place when complete.

    Raises:
        ExportError: ``src`` is not a model folder, or ``dest`` exists and is not empty (without ``overwrite``).
    """
    src, dest = _model_folder(Path(src)), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise ExportError(f"{dest} already exists and is not empty; choose a new folder or pass --overwrite")
    if dest.resolve() == src.resolve() or src.resolve() in dest.resolve().parents:
        raise UsageError(f"--to {dest} must be outside the model folder {src}")
    run = run_dir_of(src)
    title = name or (repo_id.split("/")[-1] if repo_id else None) or \
        (run.resolve().name if src.resolve() == run.resolve() else f"{run.resolve().name}-{src.name}")
    tmp = temp_dir_for(dest, "export")
    try:
        for f in (*TOKENIZER_FILES, "config.json", TRAIN_INFO):
            if (src / f).is_file():
                shutil.copy2(src / f, tmp / f)
        if (src / "model.safetensors").is_file():
            shutil.copy2(src / "model.safetensors", tmp / "model.safetensors")
        else:  # an older save: convert, so the hub gets safetensors
            import torch
            from safetensors.torch import save_file

            state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
                      metadata={"format": "pt"})
        card = _toml(src / CARD_FILENAME)
        if card:
            from kd_pyserini.cards import _from_mapping, write_card

            card = {**card, "name": title, "model_id": repo_id or title}
            write_card(_from_mapping(card), tmp)
        (tmp / MODEL_CARD).write_text(model_card_text(src, run_dir=run, name=title, repo_id=repo_id,
                                                      license=license), encoding="utf-8")
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
