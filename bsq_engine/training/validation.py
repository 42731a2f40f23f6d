"""One validation layer for run settings: types, ranges and cross-field rules, all at once.

``RunConfig.__post_init__`` calls :func:`validate`, so the CLI, the Train form, ``resume``
and ``RunConfig.from_dict`` (stored configs, checkpoints) all pass through the same rules.
Every problem found is reported together in one :class:`ConfigError` (a ``ValueError``).
A problem knows its field; :meth:`ConfigError.render` names each field the way the user
sees it (``--epochs`` on the command line, "BSQ epochs" in the form).

Upper bounds are choices of this project, not of the paper; each says why it exists. They
apply to new runs only (``Problem.policy``): a stored config (``RunConfig.from_dict``) is
held to types and structural ranges, so older runs keep loading.

- epochs per stage <= 10,000 and batch size <= 65,536 (the form's own limits; the paper's
  longest stage is 350 epochs);
- alpha <= ln(classes) for BSQ: for a model whose quantized layers are in series, any model
  that is not collapsed pays ``alpha * R >= alpha * avg_bits >= alpha`` (every plane group
  that is still alive has norm >= 1 after re-quantization), while a collapsed model's loss
  is at most ``ln(classes)`` (chance cross-entropy). Above that the objective's minimum is a
  collapsed model, so training provably ends at chance accuracy. The same cap is applied to
  every model as a guard;
- learning rates <= 1e6 (the presets use 0.005 to 0.1; near the float limit SGD overflows);
- problem texts contain no ";": it separates the problems of one message;
- seeds are 0 .. 2**32 - 1 (NumPy's limit); run names <= 200 printable characters.
"""

from __future__ import annotations

import math
import numbers
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALPHA_MAX_CLASSES",
    "BATCH_MAX",
    "EPOCHS_MAX",
    "LR_MAX",
    "NAME_MAX",
    "SAMPLES_MAX",
    "SEED_MAX",
    "ConfigError",
    "Problem",
    "alpha_max",
    "label_problems",
    "problems_of",
    "validate",
]

EPOCHS_MAX = 10_000
BATCH_MAX = 65_536
SAMPLES_MAX = 100_000_000  # --max-train / --max-test: far above any dataset here
LR_MAX = 1e6
SEED_MAX = 2**32 - 1
NAME_MAX = 200
PATH_MAX = 4096
BITS_MAX = 16  # BSQConfig's own cap on planes per weight
ALPHA_MAX_CLASSES = 1000  # classes assumed when a dataset's count is known only once loaded
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
_MARKER = re.compile(r"<(\w+)>")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one field. ``text`` follows the field's name; ``<other>``
    markers in it are replaced by the user's name for that other field."""

    field: str
    text: str
    policy: bool = False  # an upper bound of this project's choosing (see the module doc)

    def render(self, names: Mapping[str, str] | None = None) -> str:
        names = names or {}
        text = _MARKER.sub(lambda m: names.get(m.group(1), m.group(1)), self.text)
        return f"{names.get(self.field, self.field)} {text}"


class ConfigError(ValueError):
    """Run settings that cannot make a run; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem]):
        self.problems = tuple(problems)
        super().__init__(self.render())

    @property
    def fields(self) -> list[str]:
        return [p.field for p in self.problems]

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """All problems in one line, each field named as in ``names`` (field -> label)."""
        return "; ".join(p.render(names) for p in self.problems) + "."


def _show(value: Any) -> str:
    return _short.repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return ok and math.isfinite(value)


def _int(field: str, value: Any, lo: int, hi: int, why: str = "", policy=False) -> list[Problem]:
    if not _is_int(value):
        return [Problem(field, f"must be a whole number from {lo} to {hi}, got {_show(value)}")]
    if value < lo:
        bound = ">= 0" if lo == 0 else f"> {lo - 1}" if lo == 1 else f">= {lo}"
        return [Problem(field, f"must be a number {bound}, got {value}")]
    if value > hi:
        return [Problem(field, f"must be at most {hi}{why}, got {value}", policy)]
    return []


def _real(field: str, value: Any, hi: float, *, zero_ok: bool, why: str = "") -> list[Problem]:
    """A finite number >= 0 (> 0 unless ``zero_ok``); ``hi`` is always a policy bound."""
    bound = ">= 0" if zero_ok else "> 0"
    if not _is_real(value) or value < 0 or (value == 0 and not zero_ok):
        return [Problem(field, f"must be a number {bound}, got {_show(value)}")]
    if value > hi:
        return [Problem(field, f"must be at most {hi:g}{why}, got {value:g}", policy=True)]
    return []


def _choice(field: str, value: Any, choices: list[str]) -> list[Problem]:
    if isinstance(value, str) and value in choices:
        return []
    return [Problem(field, f"must be one of: {', '.join(choices)} (got {_show(value)})")]


def _bool(field: str, value: Any) -> list[Problem]:
    if isinstance(value, bool):
        return []
    return [Problem(field, f"must be true or false, got {_show(value)}")]


def _text(field: str, value: Any, limit: int, optional: bool = True) -> list[Problem]:
    if value is None and optional:
        return []
    if not isinstance(value, str):
        return [Problem(field, f"must be text, got {_show(value)}")]
    if not value.strip():
        return [Problem(field, "must not be empty (leave it out for the default)")]
    if len(value) > limit:
        return [Problem(field, f"must be at most {limit} characters, got {len(value)}", True)]
    if any(not ch.isprintable() for ch in value):
        text = "must not contain control characters (newlines, tabs, NUL)"
        return [Problem(field, text, policy=True)]
    return []


def label_problems(field: str, value: Any) -> list[Problem]:
    """The rules of a run name, for other labels (a sweep's name)."""
    return _text(field, value, NAME_MAX)


def alpha_max(dataset: str) -> float:
    """The largest alpha that can leave a non-collapsed optimum: ``ln(classes)``."""
    from bsq_engine.data import get_dataset_info, list_datasets

    classes = ALPHA_MAX_CLASSES
    if dataset in list_datasets() and get_dataset_info(dataset).num_classes > 1:
        classes = get_dataset_info(dataset).num_classes
    return math.log(classes)


def _names(v: Mapping[str, Any]) -> list[Problem]:
    from bsq_engine.data import list_datasets
    from bsq_engine.models import list_models
    from bsq_engine.training.config import METHODS

    out = _choice("model", v["model"], list_models())
    out += _choice("dataset", v["dataset"], list_datasets())
    out += _choice("method", v["method"], list(METHODS))
    if not (isinstance(v["device"], str) and _DEVICE.match(v["device"])):
        out.append(
            Problem("device", f"must be 'auto', 'cpu' or 'cuda[:N]', got {_show(v['device'])}")
        )
    out += _text("name", v["name"], NAME_MAX)
    out += _text("data_root", v["data_root"], PATH_MAX)
    return out


def _alpha(v: Mapping[str, Any]) -> list[Problem]:
    alpha = v["alpha"]
    if v["method"] != "bsq" and alpha is None:  # uniform runs have no alpha
        return []
    if not _is_real(alpha) or alpha < 0:
        return [Problem("alpha", f"must be >= 0, got {_show(alpha)} (larger alpha means "
                        "fewer bits, 0 turns the regularizer off, and the preset's value, "
                        "shown by `list`, is a good start)")]  # fmt: skip
    if v["method"] == "bsq" and isinstance(v["dataset"], str):
        cap = alpha_max(v["dataset"])
        if alpha > cap:
            return [Problem("alpha", f"must be at most {cap:.3g} = ln(classes) for this "
                            "dataset: above it a model with every layer pruned has the lower "
                            "loss, so training collapses to chance accuracy (got "
                            f"{alpha:g})", policy=True)]  # fmt: skip
    return []


def _bits(v: Mapping[str, Any]) -> list[Problem]:
    out = _int("max_bits", v["max_bits"], 1, BITS_MAX)
    max_ok = not out
    hi = v["max_bits"] if max_ok else BITS_MAX
    why = " (<max_bits>)" if max_ok else ""
    n = _int("n_bits", v["n_bits"], 1, BITS_MAX)
    if not n and max_ok and v["n_bits"] > hi:
        n = [Problem("n_bits", f"must be between 1 and <max_bits> ({hi}), got {v['n_bits']} "
                     "(raise <max_bits> or lower it)")]  # fmt: skip
    out += n
    if v["method"] == "uniform":
        u = _int("uniform_bits", v["uniform_bits"], 1, hi, why)
    else:  # not used by BSQ: only its type matters
        u = _int("uniform_bits", v["uniform_bits"], 1, BITS_MAX)
    out += u
    act = v["act_bits"]
    if act is not None and not (_is_int(act) and 2 <= act <= BITS_MAX):
        out.append(Problem("act_bits", "must be None (float activations) or a whole number "
                           f"from 2 to {BITS_MAX}, got {_show(act)}"))  # fmt: skip
    out += _bool("fixed_bn_scales", v["fixed_bn_scales"])
    if v["max_msb_drop"] is not None:
        out += _int("max_msb_drop", v["max_msb_drop"], 1, BITS_MAX, " (or None: no cap)")
    return out + _bool("float_shortcuts", v["float_shortcuts"])


def _method_settings(v: Mapping[str, Any]) -> list[Problem]:
    """The settings of the fixed-scheme methods (uniform first/last, scheme, hawq)."""
    from bsq_engine.training.config import SENSITIVITIES

    hi = v["max_bits"] if _is_int(v["max_bits"]) and 1 <= v["max_bits"] <= BITS_MAX else BITS_MAX
    out = []
    if v["first_last_bits"] is not None:
        out += _int("first_last_bits", v["first_last_bits"], 1, hi, " (<max_bits>)")
    scheme = v["scheme"]
    bits_ok = isinstance(scheme, tuple | list) and all(_is_int(b) and 0 <= b <= hi for b in scheme)
    if (v["method"] == "scheme" and not (bits_ok and scheme)) or not (scheme is None or bits_ok):
        out.append(Problem("scheme", f"needs bits per quantized layer, each 0..{hi} (e.g. "
                           f"8,4,2,4,8), got {_show(scheme)}"))  # fmt: skip
    avg = v["avg_bits"]
    if v["method"] == "hawq" and not (_is_real(avg) and 1 <= avg <= hi):
        out.append(Problem("avg_bits", f"needs a bit budget from 1 to {hi} for method hawq "
                           f"(e.g. 2.5), got {_show(avg)}"))  # fmt: skip
    elif avg is not None and not _is_real(avg):
        out.append(Problem("avg_bits", f"must be a number of bits, got {_show(avg)}"))
    return out + _choice("sensitivity", v["sensitivity"], list(SENSITIVITIES))


def _schedule(v: Mapping[str, Any]) -> list[Problem]:
    why = " (the paper's longest stage is 350 epochs)"
    out = []
    for field in ("pretrain_epochs", "finetune_epochs"):
        out += _int(field, v[field], 0, EPOCHS_MAX, why, policy=True)
    out += _int("bsq_epochs", v["bsq_epochs"], 1, EPOCHS_MAX, why, policy=True)
    out += _int("requant_interval", v["requant_interval"], 1, EPOCHS_MAX, policy=True)
    lr_why = " (the presets use 0.005 to 0.1, and far larger rates overflow)"
    for field in ("pretrain_lr", "lr", "finetune_lr"):
        out += _real(field, v[field], LR_MAX, zero_ok=False, why=lr_why)
    for field in ("lr_milestones", "finetune_milestones"):
        m = v[field]
        if not (isinstance(m, list | tuple) and all(_is_real(x) and 0 < x < 1 for x in m)):
            out.append(Problem(field, "must be LR milestones: fractions of a stage in (0, 1), "
                               f"got {_show(m)}"))  # fmt: skip
    if _is_real(v["momentum"]) and v["momentum"] >= 1:
        out.append(Problem("momentum", f"must be below 1, got {v['momentum']:g}"))
    else:
        out += _real("momentum", v["momentum"], 1.0, zero_ok=True)
    out += _real("weight_decay", v["weight_decay"], 1.0, zero_ok=True)
    return out


def _data(v: Mapping[str, Any]) -> list[Problem]:
    out = _int("batch_size", v["batch_size"], 1, BATCH_MAX, policy=True)
    out += _int("seed", v["seed"], 0, SEED_MAX, " (NumPy's seed limit)")
    for field in ("max_train", "max_test"):
        if v[field] is not None:
            out += _int(field, v[field], 1, SAMPLES_MAX, policy=True)
    out += _bool("reuse_pretrained", v["reuse_pretrained"])
    return out


def _version(v: Mapping[str, Any]) -> list[Problem]:
    from bsq_engine.training.config import CONFIG_VERSION

    version = v["version"]
    if _is_int(version) and version > CONFIG_VERSION:
        return [Problem("version", f"is {version}: this config was written by a newer BSQ "
                        "Explorer; upgrade the package to read it")]  # fmt: skip
    return _int("version", version, 1, CONFIG_VERSION)


def problems_of(values: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a full set of RunConfig values (a ``to_dict()``-shaped mapping)."""
    out = _names(values) + _alpha(values) + _bits(values) + _method_settings(values)
    return out + _schedule(values) + _data(values) + _version(values)


def validate(values: Mapping[str, Any], *, new: bool = True) -> None:
    """Raise :class:`ConfigError` listing every problem, or return quietly. ``new=False``
    (a stored config: a run, a checkpoint, an export) skips the policy bounds, so runs
    made before a bound existed still load, show, export and resume."""
    problems = [p for p in problems_of(values) if new or not p.policy]
    if problems:
        raise ConfigError(problems)
