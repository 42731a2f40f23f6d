"""Run configuration: one frozen, validated, JSON-serializable dataclass, plus presets."""

from __future__ import annotations

import contextvars
import dataclasses
import enum
from dataclasses import dataclass, field

from bsq_engine.core.quantize import BSQConfig
from bsq_engine.training.validation import ConfigError, Problem, validate

__all__ = ["CONFIG_VERSION", "METHODS", "ConfigError", "RunConfig", "Stage", "stages_for"]

CONFIG_VERSION = 1
# Set while from_dict builds a config that was stored (validation.validate(new=False)).
_FROM_STORE: contextvars.ContextVar[bool] = contextvars.ContextVar("from_store", default=False)
METHODS = ("bsq", "uniform")


class Stage(enum.StrEnum):
    """Where a run is in its pipeline; ``QAT`` is the uniform baseline's BSQ-stage twin."""

    PRETRAIN = "pretrain"
    BSQ = "bsq"
    QAT = "qat"
    FINETUNE = "finetune"
    DONE = "done"


def stages_for(method: str) -> list[Stage]:
    """The training stages of a method, in order (``DONE`` excluded)."""
    middle = Stage.BSQ if method == "bsq" else Stage.QAT
    return [Stage.PRETRAIN, middle, Stage.FINETUNE]


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. ``bsq_epochs`` is the CLI's ``--epochs``.

    Defaults equal the default preset (MLP on digits); use ``presets.make_config`` for others.

    Learning-rate schedules are step decays (x0.1) at fractions of each stage, as in the
    paper's recipe (350 BSQ epochs with a decay at 250 -> ``(0.7,)``).
    """

    model: str = "mlp"
    dataset: str = "digits"
    method: str = "bsq"
    alpha: float = 0.2
    uniform_bits: int = 4
    n_bits: int = 8
    max_bits: int = 8
    act_bits: int | None = None
    float_shortcuts: bool = False
    pretrain_epochs: int = 20
    bsq_epochs: int = 60
    finetune_epochs: int = 20
    requant_interval: int = 10
    pretrain_lr: float = 0.05
    lr: float = 0.05
    finetune_lr: float = 0.005
    lr_milestones: tuple[float, ...] = (0.7,)
    finetune_milestones: tuple[float, ...] = (0.5, 0.83)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    max_train: int | None = None
    max_test: int | None = None
    data_root: str | None = None
    reuse_pretrained: bool = True
    name: str | None = None
    version: int = field(default=CONFIG_VERSION)

    def __post_init__(self):
        for name in ("lr_milestones", "finetune_milestones"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        # Every problem at once, fields named by the caller (see training/validation.py).
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        validate(values, new=not _FROM_STORE.get())

    def bsq_config(self) -> BSQConfig:
        return BSQConfig(
            n_bits=self.n_bits,
            max_bits=self.max_bits,
            act_bits=self.act_bits,
            float_shortcuts=self.float_shortcuts,
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["lr_milestones"] = list(self.lr_milestones)
        data["finetune_milestones"] = list(self.finetune_milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Build from stored JSON; unknown keys are an error so typos never pass silently.
        Types and ranges are checked; the upper bounds for new runs are not (old runs load).
        """
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ConfigError([Problem("config", f"must be a JSON object, got {kind}")])
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown config keys {unknown}. Valid keys: {sorted(known)}.")
        token = _FROM_STORE.set(True)  # stored: types and ranges, not the new-run bounds
        try:
            return cls(**data)
        finally:
            _FROM_STORE.reset(token)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @property
    def stages(self) -> list[Stage]:
        return stages_for(self.method)

    def epochs_of(self, stage: Stage) -> int:
        return {
            Stage.PRETRAIN: self.pretrain_epochs,
            Stage.BSQ: self.bsq_epochs,
            Stage.QAT: self.bsq_epochs,
            Stage.FINETUNE: self.finetune_epochs,
        }[Stage(stage)]

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs_of(s) for s in self.stages)

    def lr_at(self, stage: Stage, epoch: int) -> float:
        """Learning rate of 1-based ``epoch`` of ``stage``: a function of the epoch only."""
        stage = Stage(stage)
        base, milestones = {
            Stage.PRETRAIN: (self.pretrain_lr, self.lr_milestones),
            Stage.BSQ: (self.lr, self.lr_milestones),
            Stage.QAT: (self.lr, self.lr_milestones),
            Stage.FINETUNE: (self.finetune_lr, self.finetune_milestones),
        }[stage]
        total = self.epochs_of(stage)
        decays = sum(1 for m in milestones if epoch > round(m * total))
        return base * 0.1**decays
