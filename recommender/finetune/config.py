"""Fine-tune configuration and results: the hyper-parameters of a trial (:class:`TrialConfig`),
its grid, its outcome (:class:`TrialResult`) and its identity (:func:`trial_key`)."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

from history.errors import RecommenderError

MODES = ("full", "linear")


class FineTuneError(RecommenderError):
    """A fine-tune cannot be set up (bad data, model, or hyper-parameters)."""


@dataclass(frozen=True)
class TrialConfig:
    """Hyper-parameters of one fine-tuning trial."""

    lr: float = 1e-3
    epochs: int = 5
    mode: str = "full"
    batch_size: int = 32
    seed: int = 0
    val_fraction: float = 0.2
    patience: int = 2
    weight_decay: float = 0.0

    def check(self):
        if self.mode not in MODES:
            raise FineTuneError(f"unknown fine-tune mode {self.mode!r}; valid: {', '.join(MODES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise FineTuneError(f"learning rate must be > 0, got {self.lr}")
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise FineTuneError(f"epochs and batch size must be >= 1, got {self.epochs}, {self.batch_size}")
        return self

    def hparams(self) -> dict:
        return asdict(self)


def make_grid(lrs, epochs, **common) -> list[TrialConfig]:
    """The (learning rate x epochs) grid as trial configs."""
    return [TrialConfig(lr=float(lr), epochs=int(e), **common).check() for lr in lrs for e in epochs]


@dataclass
class TrialResult:
    model: str
    spec: str
    dataset: str
    config: TrialConfig
    status: str  # completed | failed
    value: float | None = None  # best validation accuracy
    curve: list = field(default_factory=list)  # validation accuracy per epoch
    best_epoch: int | None = None
    weights: str | None = None
    job_id: int | None = None
    duration_s: float = 0.0
    timings: dict = field(default_factory=dict)
    error: str | None = None
    reused: bool = False
    mlflow_run: str | None = None


def trial_key(spec: str, dataset: str, fingerprint: str, config: TrialConfig) -> str:
    blob = json.dumps([spec, dataset, fingerprint, config.hparams()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]
