"""Checkpoints of a training run: finding and listing them, the RNG state they carry, the rules for the output
folder (another run's folder is never silently mixed with a new one), settings that must match on ``--resume``,
writing a checkpoint folder under a temporary name, and pruning old ones.

A checkpoint is ``OUTPUT/checkpoint-STEP/``: a Hugging Face model directory plus :data:`STATE_FILE` (optimizer,
scheduler, RNG states, data position, the run's settings). It is written as ``OUTPUT/.tmp-checkpoint-STEP`` and
renamed when complete, so a crash, Ctrl-C or a full disk never leaves half a checkpoint under a final name.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_pyserini.atomic import replace_dir
from kd_pyserini.errors import KdError, UsageError, one_line
from kd_pyserini.train.config import CheckpointWriteError, OutputInUseError, ResumeMismatchError
from kd_pyserini.train.parts import load_optimizer_state

__all__ = ["STATE_FILE", "find_checkpoint", "list_checkpoints", "rng_state", "set_rng_state", "seed_everything",
           "check_output", "clear_output", "settings_diff", "check_resume_settings", "trainer_state", "load_state",
           "write_dir", "prune", "delete_checkpoint",
           "PATH_SETTINGS"]

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.pt"
#: what a kd-train output folder holds besides checkpoints (any of them marks a folder as a training run's).
RUN_FILES = ("training_args.json", "train_log.csv", "kd_pyserini_train.json")
#: caches a run may leave in --output before training starts (the k-means query clusters); each checks itself
#: against its own record, so an output holding only these counts as empty for a new run.
CACHE_FILES = ("query_clusters.tsv", "query_clusters.tsv.json")
#: settings that are paths: compared as resolved paths, so ``./teacher.tsv`` and ``/abs/teacher.tsv`` are equal.
PATH_SETTINGS = ("teacher", "collection", "queries", "student")


# ------------------------------------------------------------------------------------------------ finding

def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory (one holding ``trainer_state.pt``), or the latest ``checkpoint-N`` inside ``path``."""
    p = Path(path)
    if (p / STATE_FILE).is_file():
        return p
    if p.is_dir():
        ckpts = list_checkpoints(p)
        if ckpts:
            return ckpts[-1][1]
    raise FileNotFoundError(f"{p} is neither a checkpoint (no {STATE_FILE}) nor an output directory with "
                            "checkpoint-N folders; pass --resume OUTPUT_DIR or --resume OUTPUT_DIR/checkpoint-N")


def list_checkpoints(output: Path) -> list[tuple[int, Path]]:
    """``[(step, folder)]`` of the complete checkpoints in ``output``, oldest first."""
    out = []
    for d in output.glob("checkpoint-*"):
        suffix = d.name.removeprefix("checkpoint-")
        if d.is_dir() and suffix.isdigit() and (d / STATE_FILE).is_file():
            out.append((int(suffix), d))
    return sorted(out)


# ------------------------------------------------------------------------------------------------ RNG state

def rng_state() -> dict[str, Any]:
    """Every RNG's state as plain Python values (bytes, ints), so it pickles across processes and loads with
    ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (kind, keys.astype(np.uint32).tobytes(), int(pos), int(has_gauss), float(cached)),
             "torch": torch.get_rng_state().numpy().tobytes()}
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return state


def _bytes_tensor(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.frombuffer(keys, dtype=np.uint32).copy(), pos, has_gauss, cached))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(b) for b in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ the output folder

def _looks_like_run(output: Path) -> bool:
    return any((output / f).exists() for f in RUN_FILES + CACHE_FILES) or any(output.glob("checkpoint-*")) \
        or any(output.glob(".tmp-checkpoint-*"))


def _is_cache(name: str) -> bool:
    """A cache file, or the hidden temporary of one that a kill interrupted (atomic_write's ``.NAME.*.tmp``)."""
    return name in CACHE_FILES or any(name.startswith(f".{c}.") and name.endswith(".tmp") for c in CACHE_FILES)


def _shown(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_output(output: Path, resume_dir: Path | None, overwrite: bool) -> None:
    """Refuse an ``output`` that would mix two runs (checked before any work starts).

    * not empty, without ``resume`` or ``overwrite``: another run's checkpoints would be pruned against the new
      ones, and a later ``--resume latest`` would continue the wrong run;
    * ``overwrite`` of a folder that is not a kd-train output (it would delete unrelated files), or together with a
      ``resume`` checkpoint inside ``output`` (it would delete what training continues from);
    * ``resume`` of another folder's checkpoint into a non-empty ``output``;
    * ``resume`` of a checkpoint older than others in ``output`` (their newer steps belong to another timeline).

    Raises:
        OutputInUseError, UsageError: with the way out in the message.
    """
    if output.exists() and not output.is_dir():
        raise OutputInUseError(f"{output} is a file; --output must be a folder")
    entries = sorted(p.name for p in output.iterdir() if not _is_cache(p.name)) if output.is_dir() else []
    inside = resume_dir is not None and resume_dir.resolve().parent == output.resolve()
    if overwrite:
        if inside:
            raise UsageError(f"--overwrite would delete {resume_dir}, the checkpoint --resume continues from; drop "
                             f"--overwrite to continue the run in {output}")
        if entries and not _looks_like_run(output):
            raise OutputInUseError(f"{output} holds files that are not a kd-train run ({_shown(entries)}); "
                                   "--overwrite only replaces a kd-train output folder: choose an empty or new "
                                   "--output")
        return
    if not entries:
        return
    if resume_dir is None:
        ckpts = list_checkpoints(output)
        how = ("continue that run with --resume latest, replace it with --overwrite" if ckpts else
               "it has no checkpoint to resume from: replace it with --overwrite")
        what = "another training run" if _looks_like_run(output) else "files"
        raise OutputInUseError(f"{output} already holds {what} ({_shown(entries)}); {how}, or choose another "
                               "--output")
    if not inside:
        raise OutputInUseError(f"{output} already holds files ({_shown(entries)}) and --resume {resume_dir} is "
                               "another folder's checkpoint: pass --overwrite to replace them, or choose an empty "
                               "--output")
    step = resume_dir.name.removeprefix("checkpoint-")
    newer = [d.name for s, d in list_checkpoints(output) if step.isdigit() and s > int(step)]
    if newer:
        raise OutputInUseError(f"{output} holds {_shown(newer)}, newer than {resume_dir.name} that --resume "
                               "continues from; resuming would mix two runs: use --resume latest, or delete the "
                               "newer checkpoints first")


def clear_output(output: Path) -> None:
    """Delete everything in ``output`` (``--overwrite``; :func:`check_output` has checked it is a training run's)."""
    if not output.is_dir():
        return
    for p in output.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


# ------------------------------------------------------------------------------------------------ resume settings

def _normal(key: str, value: Any) -> Any:
    if key in PATH_SETTINGS and isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def settings_diff(saved: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{setting: (saved, now)}`` for the settings the checkpoint recorded that differ now (a checkpoint of an
    older version records fewer; those it lacks are not compared)."""
    return {k: (saved[k], v) for k, v in now.items() if k in saved and _normal(k, saved[k]) != _normal(k, v)}


def check_resume_settings(ckpt: Path, saved: Mapping[str, Any], now: Mapping[str, Any], force: bool) -> None:
    """Refuse to resume ``ckpt`` with other settings than it was trained with, unless ``force`` (then warn).

    Raises:
        ResumeMismatchError: one line listing each difference as ``name: saved -> now``.
    """
    diffs = settings_diff(saved, now)
    if not diffs:
        return
    listed = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in diffs.items())
    if not force:
        from kd_pyserini.encoding.precision import resume_hint

        hint = resume_hint(*diffs["precision"]) if "precision" in diffs else ""
        raise ResumeMismatchError(f"{ckpt} was trained with other settings than this run's ({listed}){hint}; repeat "
                                  "the run's original options, or pass --force to continue anyway (not an exact "
                                  "continuation)")
    log.warning("resuming %s with different settings (%s): training continues (--force), but not as an exact "
                "continuation of the interrupted run", ckpt, listed)


# ------------------------------------------------------------------------------------------------ trainer state

def trainer_state(trainer: Any, rng: list[dict[str, Any]], teacher_scales: list[Any] | None = None
                  ) -> dict[str, Any]:
    """What :data:`STATE_FILE` holds for a :class:`~kd_pyserini.train.trainer.MarginMSETrainer`: its
    :class:`~kd_pyserini.train.state.TrainerState` (``state_dict()``), the optimizer, scheduler and scaler states,
    ``rng`` (every rank's :func:`rng_state`), the settings a resume must match and the recipe that was applied
    (:meth:`~kd_pyserini.train.config.TrainConfig.applied_recipe`: the preset and its overrides), and every rank's
    ``--in-batch-teacher-scale auto`` calibration (``teacher_scales``, :func:`teacher_scale_state`; each rank fits its
    own batches)."""
    if teacher_scales is None:
        teacher_scales = [teacher_scale_state(getattr(trainer, "in_batch_teacher", None))]
    return {"format": 1, **trainer.state.state_dict(),
            "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler else None, "rng": rng,
            "settings": trainer.settings(), "recipe_applied": trainer.cfg.applied_recipe(),
            "num_triples": len(trainer.data), "in_batch_teacher_scale": list(teacher_scales)}


def teacher_scale_state(teacher: Any) -> dict[str, Any] | None:
    """An ``--in-batch-teacher-scale auto`` teacher's calibration, as plain values: the fitted scale once the fit is
    final, else the margins seen so far (so a resumed run refits from exactly them); ``None`` for a fixed scale."""
    if teacher is None or getattr(teacher, "scale_mode", "fixed") != "auto":
        return None
    margins = getattr(teacher, "_margins", ([], []))
    return {"scale": teacher.scale, "calibrated": bool(getattr(teacher, "_calibrated", False)),
            "in_batch_margins": [float(x) for x in margins[0]], "file_margins": [float(x) for x in margins[1]]}


def restore_teacher_scale(teacher: Any, saved: Mapping[str, Any] | None) -> None:
    """Put an ``auto`` teacher back where :func:`teacher_scale_state` found it: a final fit through
    ``teacher.restore_scale``; a fit still in progress by re-observing the saved margins (the same numbers in the same
    order give the same least-squares scale)."""
    if teacher is None or not saved or getattr(teacher, "scale_mode", "fixed") != "auto":
        return
    if saved.get("calibrated") and saved.get("scale") is not None:
        teacher.restore_scale(float(saved["scale"]))
    elif saved.get("in_batch_margins"):
        teacher.observe_margins(np.asarray(saved["in_batch_margins"], dtype=np.float64),
                                np.asarray(saved["file_margins"], dtype=np.float64))


def load_state(trainer: Any, ckpt: Path, settings: Mapping[str, Any], force: bool) -> None:
    """Restore ``trainer`` from ``ckpt`` after :func:`check_resume_settings` (its ``state.load_state_dict``; this
    process's RNG state goes to ``state.rng_to_restore``, set when training starts, after validation at step 0)."""
    state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    saved = dict(state.get("settings") or {})
    if "num_triples" in state:
        saved.setdefault("num_triples", state["num_triples"])
    check_resume_settings(ckpt, saved, settings, force)
    load_optimizer_state(trainer.optimizer, state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.scaler is not None and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.state.load_state_dict(state)
    rngs = state["rng"]
    world, rank = trainer.dist.world_size, trainer.dist.rank
    scales = state.get("in_batch_teacher_scale") or [None]
    restore_teacher_scale(getattr(trainer, "in_batch_teacher", None), scales[rank % len(scales)])
    if len(rngs) != world:
        log.warning("checkpoint has RNG states for %d process(es), this run has %d: dropout randomness differs",
                    len(rngs), world)
    trainer.state.rng_to_restore = rngs[rank % len(rngs)]


# ------------------------------------------------------------------------------------------------ writing

def _write_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, RuntimeError]  # torch.save: RuntimeError "enforce fail at ..."
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _reason(e: BaseException, output: Path) -> str:
    text = one_line(e)
    code = e.errno if isinstance(e, OSError) and e.errno else None
    m = re.search(r"Os \{ code: (\d+)", text)  # safetensors: IoError(Os { code: 28, kind: StorageFull, ... })
    if code is None and m:
        code = int(m.group(1))
    if code is None and "No space left on device" in text:
        code = 28
    reason = os.strerror(code) if code else f"the write failed ({text[:200]})"
    try:
        reason += f" ({shutil.disk_usage(output).free / 2**20:.0f} MiB free there)"
    except OSError:
        pass
    return reason


def write_dir(final: Path, write: Callable[[Path], None], previous: Path | None, into: bool = False) -> Path:
    """Run ``write(tmp)`` into a temporary folder, then put it at ``final`` with one rename (an older ``final`` is
    replaced). ``into=True`` (the final model, written into the output folder itself): the folder is
    ``final/.tmp-final`` and its files are then moved into ``final`` one by one.

    Raises:
        CheckpointWriteError: the write failed (a full disk, a permission...); the partial folder is deleted and
            ``previous`` (named in the message) was not touched.
    """
    tmp = final / ".tmp-final" if into else final.parent / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        write(tmp)
        _add_model_card(tmp, final, into)
        if into:
            for f in tmp.iterdir():
                os.replace(f, final / f.name)
            tmp.rmdir()
        else:
            replace_dir(tmp, final)
    except KdError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except _write_errors() as e:
        shutil.rmtree(tmp, ignore_errors=True)
        where = f"the final model to {final}" if into else f"{final.name} to {final.parent}"
        keep = (f"the previous checkpoint {previous} is intact" if previous is not None
                else "no earlier checkpoint was written")
        raise CheckpointWriteError(f"could not write {where}: {_reason(e, final if into else final.parent)}; "
                                   f"{keep}; free some space, then continue with --resume latest") from e
    except BaseException:  # Ctrl-C while writing: no partial folder is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _add_model_card(tmp: Path, final: Path, into: bool) -> None:
    """A model folder (one with ``kd_pyserini_train.json``) gets its Hugging Face model card, ``README.md``
    (:mod:`kd_pyserini.train.model_card`). A card that cannot be made from what the run recorded is a warning, never
    a lost checkpoint; a failed write (a full disk) is the checkpoint's write error."""
    from kd_pyserini.train.model_card import TRAIN_INFO, write_model_card

    if not (tmp / TRAIN_INFO).is_file():
        return
    run = final if into else final.parent
    name = run.resolve().name if into else f"{run.resolve().name}-{final.name}"
    try:
        write_model_card(tmp, run_dir=run, name=name)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001  (the card is documentation: the weights must still be saved)
        log.warning("no model card (README.md) for %s: %s", final, one_line(e))


def prune(output: Path, limit: int | None, protect: Iterable[Path] = ()) -> None:
    """Delete all but the newest ``limit`` checkpoints (``None``/0: keep all), never one in ``protect``."""
    if not limit or limit < 1:
        return
    keep = {Path(p).resolve() for p in protect if p is not None}
    for _, d in list_checkpoints(output)[:-limit]:
        if d.resolve() not in keep:
            delete_checkpoint(d)


def delete_checkpoint(path: Path) -> None:
    """Rename ``path`` out of the ``checkpoint-N`` namespace (one atomic step), then delete it: an interruption
    never leaves a half-deleted folder that still looks like a checkpoint."""
    gone = path.parent / f".tmp-deleted-{path.name}"
    shutil.rmtree(gone, ignore_errors=True)
    try:
        os.replace(path, gone)
    except OSError:
        return
    shutil.rmtree(gone, ignore_errors=True)
