"""Run configuration: one frozen, validated, JSON-serializable dataclass, plus presets."""

from __future__ import annotations

import contextvars
import dataclasses
import enum
from dataclasses import dataclass, field

from bsq_engine.core.quantize import BSQConfig
from bsq_engine.training.validation import ConfigError, Problem, validate

__all__ = [
    "CONFIG_VERSION",
    "METHODS",
    "SENSITIVITIES",
    "ConfigError",
    "RunConfig",
    "Stage",
    "alpha_of",
    "describe_method",
    "stage_rank",
    "stages_for",
]

CONFIG_VERSION = 1
METHODS = ("bsq", "uniform", "scheme", "hawq")
SENSITIVITIES = ("hessian", "loo")  # Hutchinson Hessian trace, or one-layer-at-a-time loss
# Set while from_dict builds a config that was stored (validation.validate(new=False)).
_FROM_STORE: contextvars.ContextVar[bool] = contextvars.ContextVar("from_store", default=False)


class Stage(enum.StrEnum):
    """Where a run is in its pipeline; ``QAT`` is the fixed-scheme methods' BSQ-stage twin
    (uniform, scheme, hawq: quantization-aware training of a scheme chosen up front)."""

    PRETRAIN = "pretrain"
    BSQ = "bsq"
    QAT = "qat"
    FINETUNE = "finetune"
    DONE = "done"


def stages_for(method: str) -> list[Stage]:
    """The training stages of a method, in order (``DONE`` excluded)."""
    middle = Stage.BSQ if method == "bsq" else Stage.QAT
    return [Stage.PRETRAIN, middle, Stage.FINETUNE]


def describe_method(config: dict) -> str:
    """A run's method in a few words, from its config dict (tables, hovers, CLI lines).

    >>> describe_method({"method": "uniform", "uniform_bits": 2, "first_last_bits": 8})
    'uniform 2-bit, first/last 8-bit'
    >>> describe_method({"method": "hawq", "avg_bits": 2.5, "sensitivity": "loo"})
    'HAWQ-style (loo) at 2.5 avg bits'
    """
    method = config.get("method", "bsq")
    if method == "uniform":
        text = f"uniform {config.get('uniform_bits', '?')}-bit"
        first_last = config.get("first_last_bits")
        return text + (f", first/last {first_last}-bit" if first_last is not None else "")
    if method == "scheme":
        return "scheme " + "-".join(str(b) for b in config.get("scheme") or ())
    if method == "hawq":
        sensitivity = config.get("sensitivity", "hessian")
        return f"HAWQ-style ({sensitivity}) at {config.get('avg_bits', 0):g} avg bits"
    return f"BSQ alpha={config.get('alpha', 0):.4g}"


def stage_rank(stage: str) -> int:
    """Position of a stage in its pipeline, for sorting stored rows into training order:
    ``bsq`` and its uniform twin ``qat`` share one; ``done`` and unknown names sort last.

    >>> [stage_rank(s) for s in ("pretrain", "bsq", "qat", "finetune", "done", "x")]
    [0, 1, 1, 2, 3, 3]
    """
    for method in METHODS:
        order = stages_for(method)
        if stage in order:
            return order.index(stage)
    return len(stages_for(METHODS[0]))


def alpha_of(method: str, alpha: float) -> float | None:
    """The alpha a run really uses: None for a fixed-scheme run (uniform, scheme, hawq: no
    regularizer; its
    config still carries the field; the store, summaries and exports show NULL/None)."""
    return float(alpha) if method == "bsq" else None


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. ``bsq_epochs`` is the CLI's ``--epochs``.

    Defaults equal the default preset (MLP on digits); use ``presets.make_config`` for others.

    Methods: ``bsq``; ``uniform`` (``uniform_bits`` everywhere, or ``first_last_bits`` on
    the first and last quantized layers, the field's common practice); ``scheme`` (QAT of
    the given bits per quantized layer, from the float model: the paper's Table-1 control);
    ``hawq`` (bits chosen from measured ``sensitivity`` under an ``avg_bits`` budget).

    Learning-rate schedules are step decays (x0.1) at fractions of each stage, as in the
    paper's recipe (350 BSQ epochs with a decay at 250 -> ``(0.7,)``).
    """

    model: str = "mlp"
    dataset: str = "digits"
    method: str = "bsq"
    alpha: float = 0.2
    uniform_bits: int = 4
    first_last_bits: int | None = None
    scheme: tuple[int, ...] | None = None
    avg_bits: float | None = None
    sensitivity: str = "hessian"
    n_bits: int = 8
    max_bits: int = 8
    act_bits: int | None = None
    float_shortcuts: bool = False
    fixed_bn_scales: bool = False  # our option (README): BatchNorm-followed scales not trained
    max_msb_drop: int | None = None  # our option (README): cap on MSB planes dropped at once
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
        for name in ("lr_milestones", "finetune_milestones", "scheme"):
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
        data["scheme"] = None if self.scheme is None else list(self.scheme)
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
    def used_alpha(self) -> float | None:
        """``alpha``, or None for a uniform run (see :func:`alpha_of`)."""
        return alpha_of(self.method, self.alpha)

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
