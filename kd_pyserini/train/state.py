"""Where a training run stands (:class:`TrainerState`): what a checkpoint saves and ``--resume`` restores, besides
the weights, the optimizer, the scheduler and the grad scaler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainerState"]


@dataclass
class TrainerState:
    """The training position and its bookkeeping.

    Attributes:
        step: optimizer steps done. epoch / batch_in_epoch: where the data order stands.
        best_metric / best_step: the best validation so far (the first measure) and its step.
        bad_validations: validations since the best one (early stopping).
        train_seconds: seconds spent training. triples_seen: triples trained on (all processes).
        validations: every validation's row.
        rng_to_restore: this process's RNG state from a checkpoint, set again when training starts (after the
            validation at step 0, which must not move it); not part of :meth:`state_dict` (every process's state is
            gathered and saved beside it).
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    bad_validations: int = 0
    train_seconds: float = 0.0
    triples_seen: int = 0
    validations: list[dict[str, Any]] = field(default_factory=list)
    rng_to_restore: dict[str, Any] | None = None

    #: the keys :meth:`state_dict` writes (the checkpoint format: top-level keys of ``trainer_state.pt``).
    KEYS = ("step", "epoch", "batch_in_epoch", "best_metric", "best_step", "bad_validations", "train_seconds",
            "triples_seen", "validations")

    def state_dict(self) -> dict[str, Any]:
        """The position as plain values (what ``torch.save`` writes with ``weights_only`` loading in mind)."""
        return {k: (list(getattr(self, k)) if k == "validations" else getattr(self, k)) for k in self.KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote (extra keys, e.g. the optimizer's, are ignored).

        Raises:
            KeyError: a key of the position is missing (not a trainer state).
        """
        missing = [k for k in self.KEYS if k not in state]
        if missing:
            raise KeyError(f"not a trainer state: {', '.join(missing)} missing")
        for k in self.KEYS:
            setattr(self, k, list(state[k]) if k == "validations" else state[k])

