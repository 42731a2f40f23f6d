"""Pieces of the run-configuration form (Train page), and the pure form -> RunConfig builder.

Every input has a session-state key ``train.<RunConfig field>``; presets write those keys
when the model/dataset pair changes, so the form refills itself. Values are also saved under
``FORM_SAVED`` (not a widget key) because Streamlit forgets widget state on other pages.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import streamlit as st
import torch

from bsq_engine import get_dataset_info, get_model_info, list_datasets, list_models, preset_for
from bsq_engine.runs.sweep import log_alphas
from bsq_engine.training.config import ConfigError, RunConfig

__all__ = [
    "ALPHA_GRID",
    "FORM_FIELDS",
    "FORM_LABELS",
    "KEY",
    "advanced_settings",
    "alpha_controls",
    "build_config",
    "clone_into_form",
    "form_values",
    "init_form",
    "method_picker",
    "model_dataset_picker",
    "save_form",
    "sweep_form",
    "sweep_request",
]

PREFIX = "train."
FORM_SAVED = "train.saved_form"
ACT_CHOICES = ("float", 2, 3, 4, 5, 6, 8)
UNIFORM_CHOICES = (2, 3, 4, 8)
_DEFAULTS = RunConfig()
# Fields the form edits (the rest keep RunConfig defaults).
FORM_FIELDS = (
    "model", "dataset", "method", "alpha", "uniform_bits", "n_bits", "max_bits", "act_bits",
    "float_shortcuts", "pretrain_epochs", "bsq_epochs", "finetune_epochs", "requant_interval",
    "pretrain_lr", "lr", "finetune_lr", "batch_size", "seed", "device", "reuse_pretrained",
)  # fmt: skip
_PRESET_FIELDS = ("alpha", "pretrain_epochs", "bsq_epochs", "finetune_epochs",
                  "requant_interval", "pretrain_lr", "lr", "finetune_lr", "batch_size",
                  "act_bits", "float_shortcuts")  # fmt: skip


def KEY(field: str) -> str:
    """Session-state key of a form field, e.g. ``KEY("bsq_epochs") == "train.bsq_epochs"``."""
    return PREFIX + field


def _sig(x: float, digits: int = 2) -> float:
    return float(f"{x:.{digits}g}")


ALPHA_GRID: list[float] = sorted(
    {_sig(v) for v in np.logspace(-4, 1, 51)}
    | {float(preset_for(m, d).get("alpha", _DEFAULTS.alpha))
       for m in list_models() for d in list_datasets()}
)  # fmt: skip


def _nearest_alpha(alpha: float) -> float:
    if not (alpha and alpha > 0 and math.isfinite(alpha)):
        return ALPHA_GRID[0]
    return min(ALPHA_GRID, key=lambda g: abs(math.log(g) - math.log(alpha)))


def _form_value(field: str, value: Any) -> Any:
    return "float" if field == "act_bits" and value is None else value


def apply_preset(model: str, dataset: str) -> None:
    """Write the pair's preset (and RunConfig defaults for the rest) into the form."""
    preset = preset_for(model, dataset)
    for field in _PRESET_FIELDS:
        st.session_state[KEY(field)] = _form_value(
            field, preset.get(field, getattr(_DEFAULTS, field))
        )
    st.session_state[KEY("alpha_slider")] = _nearest_alpha(st.session_state[KEY("alpha")])
    _sweep_defaults(st.session_state[KEY("alpha")])


def _sweep_defaults(alpha: float) -> None:
    """A sweep from the preset alpha / 5 to alpha x 2.5: far above the preset, training gets
    erratic (measured on digits beyond ~3x), so the default range stops short of that."""
    st.session_state[KEY("sweep_lo")] = _sig(alpha / 5, 3) if alpha > 0 else 1e-3
    st.session_state[KEY("sweep_hi")] = _sig(alpha * 2.5, 3) if alpha > 0 else 1e-1


def init_form() -> None:
    """Fill missing keys: saved values from an earlier visit, else the default preset."""
    saved = st.session_state.get(FORM_SAVED, {})
    fresh = KEY("model") not in st.session_state
    for field in FORM_FIELDS:
        if KEY(field) not in st.session_state:
            default = saved.get(field, _form_value(field, getattr(_DEFAULTS, field)))
            st.session_state[KEY(field)] = default
    if fresh and not saved:
        apply_preset(st.session_state[KEY("model")], st.session_state[KEY("dataset")])
    if KEY("alpha_slider") not in st.session_state:
        st.session_state[KEY("alpha_slider")] = _nearest_alpha(st.session_state[KEY("alpha")])
    if KEY("sweep_lo") not in st.session_state:
        _sweep_defaults(st.session_state[KEY("alpha")])


def clone_into_form(config: dict) -> None:
    """Fill the Train form with a stored run's settings (its model, dataset, method, alpha,
    schedule, precision...); the Train page shows them on its next run. Unknown or invalid
    values keep the form's defaults: the Start button validates them again."""
    values = {f: _form_value(f, config[f]) for f in FORM_FIELDS if f in config}
    st.session_state[FORM_SAVED] = {**st.session_state.get(FORM_SAVED, {}), **values}
    for field in (*FORM_FIELDS, "alpha_slider", "sweep_lo", "sweep_hi"):
        st.session_state.pop(KEY(field), None)  # init_form refills them from FORM_SAVED


def save_form() -> None:
    st.session_state[FORM_SAVED] = {f: st.session_state.get(KEY(f)) for f in FORM_FIELDS}


def _on_pair_change() -> None:
    apply_preset(st.session_state[KEY("model")], st.session_state[KEY("dataset")])


def model_dataset_picker() -> tuple[bool, str]:
    """Model and dataset select boxes with descriptions; returns (dataset available, how)."""
    left, right = st.columns(2)
    with left:
        model = st.selectbox("Model", list_models(), key=KEY("model"), on_change=_on_pair_change)
        info = get_model_info(model)
        st.caption(info.description)
    with right:
        dataset = st.selectbox(
            "Dataset", list_datasets(), key=KEY("dataset"), on_change=_on_pair_change,
            format_func=lambda d: d if get_dataset_info(d).available()[0] else f"{d} (not on disk)",
        )  # fmt: skip
        dinfo = get_dataset_info(dataset)
        ok, how = dinfo.available()
        st.caption(dinfo.description)  # durations: measured, see train.time_estimate()
        if not ok:
            st.warning(f"**{dataset} is not available yet.** {how}", icon=":material/download:")
    if dataset not in info.datasets_hint:
        st.caption(f"Note: {model} is sized for {', '.join(info.datasets_hint)}.")
    return ok, how


def _slider_to_number() -> None:
    st.session_state[KEY("alpha")] = st.session_state[KEY("alpha_slider")]


def _number_to_slider() -> None:
    st.session_state[KEY("alpha_slider")] = _slider_value(st.session_state[KEY("alpha")])


def _slider_value(alpha: float) -> float:
    """The exact alpha itself when it is in the slider's range (the slider then offers it as
    a stop, so both widgets show one number), else the nearest grid value."""
    if alpha and ALPHA_GRID[0] <= alpha <= ALPHA_GRID[-1]:
        return float(alpha)
    return _nearest_alpha(alpha)


def method_picker() -> None:
    """BSQ or a uniform k-bit baseline (then its bit width)."""
    left, right = st.columns([2, 1])
    left.radio(
        "Method", ("bsq", "uniform"), key=KEY("method"), horizontal=True,
        format_func={"bsq": "BSQ (mixed precision)", "uniform": "Uniform k-bit baseline"}.get,
        help="BSQ learns a bit width per layer; the uniform baseline gives every layer k bits.",
    )  # fmt: skip
    if st.session_state[KEY("method")] == "uniform":
        right.selectbox("Bits per layer (k)", UNIFORM_CHOICES, key=KEY("uniform_bits"))


def alpha_controls() -> None:
    """Log-scale slider plus an exact number, kept in sync, with the preset as a hint."""
    model, dataset = st.session_state[KEY("model")], st.session_state[KEY("dataset")]
    preset = preset_for(model, dataset).get("alpha", _DEFAULTS.alpha)
    left, right = st.columns([3, 1])
    alpha = float(st.session_state[KEY("alpha")] or 0.0)
    if not ALPHA_GRID[0] <= alpha <= ALPHA_GRID[-1]:  # e.g. cloned from a uniform run
        st.session_state[KEY("alpha")] = min(max(alpha, ALPHA_GRID[0]), ALPHA_GRID[-1])
    current = _slider_value(st.session_state[KEY("alpha")])
    st.session_state[KEY("alpha_slider")] = current  # one number in both widgets
    left.select_slider(
        "Regularization strength alpha (log scale)", sorted({*ALPHA_GRID, current}),
        key=KEY("alpha_slider"), format_func=lambda v: f"{v:g}", on_change=_slider_to_number,
    )  # fmt: skip
    # Bounded like the slider: 0 would switch BSQ's regularizer off (that is the uniform
    # baseline's job) and a value past the slider's end could not be shown on it.
    right.number_input("Exact alpha", min_value=ALPHA_GRID[0], max_value=ALPHA_GRID[-1],
                       step=0.001, format="%.4g", key=KEY("alpha"),
                       on_change=_number_to_slider,
                       help=f"From {ALPHA_GRID[0]:g} to {ALPHA_GRID[-1]:g}.")  # fmt: skip
    st.caption(f"Larger alpha → fewer bits, lower accuracy. The preset for {model} on "
               f"{dataset} is **{preset:g}**.")  # fmt: skip


def advanced_settings() -> None:
    """Precision, schedule, optimisation and hardware settings, folded away."""
    with st.expander("Advanced settings", icon=":material/tune:"):
        c1, c2, c3 = st.columns(3)
        c1.number_input("Starting bits (n_bits)", 1, 16, step=1, key=KEY("n_bits"))
        c2.number_input("Max bits on overflow", 1, 16, step=1, key=KEY("max_bits"))
        c3.selectbox("Activation bits", ACT_CHOICES, key=KEY("act_bits"),
                     help="'float' keeps activations unquantized (the paper uses 4).")  # fmt: skip
        c1.number_input("Pretrain epochs (float)", 0, 10_000, step=1, key=KEY("pretrain_epochs"))
        c2.number_input("BSQ epochs", 1, 10_000, step=1, key=KEY("bsq_epochs"))
        c3.number_input("Finetune epochs", 0, 10_000, step=1, key=KEY("finetune_epochs"))
        c1.number_input("Re-quantize every (epochs)", 1, 10_000, step=1,
                        key=KEY("requant_interval"))  # fmt: skip
        c2.number_input("Batch size", 1, 65_536, step=1, key=KEY("batch_size"))
        c3.number_input("Seed", 0, 2**31 - 1, step=1, key=KEY("seed"))
        for col, field, label in ((c1, "pretrain_lr", "Pretrain learning rate"),
                                  (c2, "lr", "BSQ learning rate"),
                                  (c3, "finetune_lr", "Finetune learning rate")):  # fmt: skip
            col.number_input(label, min_value=0.0, step=0.001, format="%.4g", key=KEY(field))
        devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        c1.selectbox("Device", devices, key=KEY("device"))
        c2.checkbox("Keep 1x1 shortcut convs in float", key=KEY("float_shortcuts"),
                    help="As the paper's reference code does for ResNets.")  # fmt: skip
        c3.checkbox(
            "Reuse a pretrained float model",
            key=KEY("reuse_pretrained"),
            help="Skip pretraining when an identical float model was trained before.",
        )


def form_values() -> dict:
    """The form's current values as RunConfig keyword arguments (not yet validated)."""
    values = {f: st.session_state.get(KEY(f), getattr(_DEFAULTS, f)) for f in FORM_FIELDS}
    if values["method"] != "uniform":
        values["uniform_bits"] = _DEFAULTS.uniform_bits
    return values


def sweep_form(dataset_ok: bool, on_start) -> None:
    """Sweep settings and the "Start sweep" button. ``on_start`` is the button's callback:
    it runs before the page's script, so a live panel's timed rerun cannot swallow the
    click (a plain ``if st.button(...)`` lost one under load); it reads the settings with
    :func:`sweep_request`."""
    left, mid, right = st.columns(3)
    n = left.number_input("Points", 2, 12, value=5, step=1, key=KEY("sweep_n"))
    lo = mid.number_input("Lowest alpha", min_value=1e-6, format="%.4g", key=KEY("sweep_lo"))
    hi = right.number_input("Highest alpha", min_value=1e-6, format="%.4g", key=KEY("sweep_hi"))
    try:
        alphas = log_alphas(lo, hi, int(n))
    except ValueError as exc:
        st.error(f"{exc} Make the lowest alpha smaller than the highest.")
        return
    st.caption("Alphas (log-spaced): " + ", ".join(f"{a:g}" for a in alphas))
    left, right = st.columns(2)
    left.multiselect(
        "Uniform baselines (bits)",
        UNIFORM_CHOICES,
        key=KEY("sweep_bits"),
        help="Uniform k-bit runs to compare the BSQ frontier against.",
    )
    right.text_input("Sweep name", key=KEY("sweep_name"), placeholder="automatic")
    st.button("Start sweep", key=KEY("sweep_start"), disabled=not dataset_ok,
              icon=":material/stacked_line_chart:", on_click=on_start)  # fmt: skip


def sweep_request() -> dict:
    """``start_sweep`` keyword arguments from the sweep form's values (and the run form's
    shared settings); ``ValueError`` when they do not make a valid sweep."""
    state = st.session_state
    alphas = log_alphas(state[KEY("sweep_lo")], state[KEY("sweep_hi")], int(state[KEY("sweep_n")]))
    values = form_values()
    base = {k: v for k, v in values.items() if k not in ("alpha", "method", "uniform_bits")}
    overrides = build_config({**base, "method": "bsq"}).to_dict()  # validates the base
    keep = set(base) - {"model", "dataset"}
    name = (state.get(KEY("sweep_name")) or "").strip()
    return {"model": values["model"], "dataset": values["dataset"], "alphas": alphas,
            "uniform_bits": list(state.get(KEY("sweep_bits")) or []), "name": name or None,
            "overrides": {k: v for k, v in overrides.items() if k in keep}}  # fmt: skip


# RunConfig field -> the label the user sees, so validation messages name the form's inputs.
FORM_LABELS = {
    "model": "Model", "dataset": "Dataset", "method": "Method", "alpha": "Exact alpha",
    "uniform_bits": "Bits per layer (k)", "n_bits": "Starting bits (n_bits)",
    "max_bits": "Max bits on overflow", "act_bits": "Activation bits",
    "float_shortcuts": "Keep 1x1 shortcut convs in float",
    "pretrain_epochs": "Pretrain epochs (float)", "bsq_epochs": "BSQ epochs",
    "finetune_epochs": "Finetune epochs", "requant_interval": "Re-quantize every (epochs)",
    "pretrain_lr": "Pretrain learning rate", "lr": "BSQ learning rate",
    "finetune_lr": "Finetune learning rate", "batch_size": "Batch size", "seed": "Seed",
    "device": "Device", "reuse_pretrained": "Reuse a pretrained float model",
}  # fmt: skip


def build_config(values: dict) -> RunConfig:
    """Form values -> validated RunConfig; raises ValueError naming the form's labels and
    listing every problem at once."""
    values = dict(values)
    if values.get("act_bits") == "float":
        values["act_bits"] = None
    for field in ("alpha", "pretrain_lr", "lr", "finetune_lr"):
        if isinstance(values.get(field), int) and not isinstance(values[field], bool):
            values[field] = float(values[field])
    try:
        return RunConfig(**values)
    except ConfigError as exc:
        raise ValueError(exc.render(FORM_LABELS)) from None
