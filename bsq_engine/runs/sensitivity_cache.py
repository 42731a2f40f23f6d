"""The per-layer sensitivity of any run, measured once and kept in its folder as JSON.

Which float model is measured (our choice, said on every page that shows it):

1. the run's **pretrained float model from the float cache** (``float_cache``): the model
   BSQ (or QAT) started from, and the one HAWQ-style allocation measures, so the question
   "did the bits follow sensitivity?" is asked of the network the bits were chosen for;
2. otherwise (the cache entry was removed, or the store was copied without it) the run's
   **final checkpoint with each quantized layer turned back into its float twin**
   (``to_float``). That model's weights already sit on the run's grid, so its costs at or
   above a layer's own bits are near zero; the note says so.

The measurement (``training.sensitivity_report.measure_model``) uses a few batches of the
run's own dataset and takes seconds on the small models. Its result is written atomically
to ``runs/<id>/sensitivity.json`` (JSON only, never pickle); a damaged file is kept aside as
``sensitivity.json.damaged`` and measured again, with a note. Bits per layer are read from
the run's summary each time, never cached, so they are never stale.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import threading
import time

import torch
from torch import nn

from bsq_engine.core.quantize import prepare_uniform, quantized_layers
from bsq_engine.data import load_dataset
from bsq_engine.runs.export import load_run_model
from bsq_engine.runs.paths import cache_dir, sensitivity_path
from bsq_engine.training.checkpoint import CheckpointError
from bsq_engine.training.config import RunConfig
from bsq_engine.training.run_model import pretrained_model, shape_of
from bsq_engine.training.schemes import (
    HUTCHINSON_SAMPLES,
    SENSITIVITY_BATCH_SIZE,
    SENSITIVITY_BATCHES,
)
from bsq_engine.training.sensitivity_report import measure_model

__all__ = ["FORMAT", "TEST_IMAGES", "cached_sensitivity", "measure_run", "sensitivity_of"]

FORMAT = 1
TEST_IMAGES = 2048  # held-out images per one-layer-at-a-time evaluation (bounds the cost)
_TEST_BATCH = 512
SOURCES = {
    "float_cache": "the run's pretrained float model (float cache): the model its bits were "
    "chosen for",
    "final_checkpoint": "the run's final model turned back into float (its float model is no "
    "longer cached); its weights already sit on the run's grid, so costs at or above a "
    "layer's own bits are near zero",
}
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(store, run_id: str) -> threading.Lock:
    """One lock per run: two viewers pressing 'Measure' at once measure once."""
    with _locks_guard:
        return _locks.setdefault((str(store.home), run_id), threading.Lock())


def _float_model(store, run_id: str, config: RunConfig) -> tuple[nn.Module, str]:
    model, accuracy = pretrained_model(config, shape_of(config), cache_dir(store.home))
    if accuracy is not None:
        return model, "float_cache"
    try:
        model, _, _ = load_run_model(store, run_id)
    except CheckpointError as exc:
        raise CheckpointError(
            f"Run {run_id} has no float model to measure: its pretrained model is not in the "
            f"float cache and it has no final checkpoint ({exc}). Resume or re-run it."
        ) from None
    for name, layer in quantized_layers(model):
        model.set_submodule(name, layer.to_float())
    return model, "final_checkpoint"


def _layer_names(model: nn.Module, config: RunConfig) -> list[str]:
    """The layers the run quantizes (a dry run of ``prepare_uniform`` on a copy, so one rule
    decides which layers count, e.g. ResNet shortcuts kept float)."""
    probe = prepare_uniform(copy.deepcopy(model), 1, config.bsq_config())
    return [name for name, _ in quantized_layers(probe)]


def measure_run(store, run_id: str) -> dict:
    """Measure run ``run_id``'s per-layer sensitivity now (no cache); JSON-ready dict."""
    run = store.get_run(run_id)
    config = RunConfig.from_dict(run["config"])
    model, source = _float_model(store, run_id, config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    data = load_dataset(config.dataset, config.data_root, download=False,
                        max_train=config.max_train, max_test=config.max_test)  # fmt: skip
    loader = data.train_loader(SENSITIVITY_BATCH_SIZE, seed=config.seed, device=device)
    train = list(itertools.islice(loader, SENSITIVITY_BATCHES))
    tests = data.test_loader(_TEST_BATCH, device=device)
    test = list(itertools.islice(tests, math.ceil(TEST_IMAGES / _TEST_BATCH)))
    result = measure_model(model, _layer_names(model, config), train, test,
                           hutchinson_samples=HUTCHINSON_SAMPLES, seed=config.seed)  # fmt: skip
    return {
        "format": FORMAT, "run_id": run_id, "finished_at": run.get("finished_at"),
        "source": source, "device": str(device), "measured_at": time.time(), **result,
    }  # fmt: skip


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _layer_problem(layer, widths: list[str]) -> str | None:
    if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
        return "a layer has no name"
    tables = [layer.get(k) for k in ("loss_increase", "accuracy_drop_points")]
    if not all(isinstance(t, dict) for t in tables):
        return f"layer {layer['name']} has no costs"
    numbers = [layer.get(k) for k in ("n_weights", "trace", "trace_per_weight")]
    numbers += [t.get(w) for t in tables for w in widths]
    return None if all(map(_finite, numbers)) else f"layer {layer['name']}'s numbers are bad"


def _check(result, run: dict) -> str | None:
    """Why a stored result cannot be used (``None`` when it can; ``"stale"`` when its model
    was the final checkpoint of an earlier finish of a resumed run)."""
    if not isinstance(result, dict) or result.get("format") != FORMAT:
        return f"not a format-{FORMAT} sensitivity file"
    widths, base = result.get("bit_widths"), result.get("base")
    if not isinstance(widths, list) or not widths or not all(isinstance(w, int) for w in widths):
        return "its bit widths are missing"
    if not isinstance(base, dict) or not all(_finite(base.get(k)) for k in ("loss", "accuracy")):
        return "the float model's accuracy is missing"
    counts = [result.get(k) for k in ("seconds", "hutchinson_samples", "train_images",
                                      "test_images")]  # fmt: skip
    if not all(map(_finite, counts)) or result.get("source") not in SOURCES:
        return "its timing, sample counts or source are missing"
    layers = result.get("layers")
    if not isinstance(layers, list) or not layers:
        return "it lists no layers"
    for layer in layers:
        problem = _layer_problem(layer, [str(w) for w in widths])
        if problem:
            return problem
    stale = result.get("finished_at") != run.get("finished_at")
    return "stale" if result["source"] == "final_checkpoint" and stale else None


def _with_bits(result: dict, run: dict) -> dict:
    """The run's final bits per measured layer, from its summary (``None`` if unfinished)."""
    summary = run.get("summary") or {}
    by_name = {layer.get("name"): layer.get("n_bits") for layer in summary.get("layers") or []}
    names = [layer["name"] for layer in result["layers"]]
    bits = [by_name.get(name) for name in names]
    method = run.get("method") or (run.get("config") or {}).get("method")
    whose = "BSQ's" if method == "bsq" else "this run's"
    ok = all(isinstance(b, int) for b in bits)
    note = SOURCES[result["source"]]
    return {**result, "run_id": run["run_id"], "device": str(result.get("device", "?")),
            "bits": bits if ok else None, "bits_whose": whose, "source_note": note}  # fmt: skip


def _read(store, run: dict) -> tuple[dict | None, str | None]:
    """(usable result, why the file is damaged); ``(None, None)`` when there is none."""
    path = sensitivity_path(store, run["run_id"])
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable ({exc})"
    try:
        result = json.loads(text)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    problem = _check(result, run)
    if problem == "stale":  # the run was resumed and finished again: measure its new model
        return None, None
    return (None, problem) if problem else (result, None)


def _damaged_note(store, run_id: str, why: str, done: bool) -> str:
    kept = f"{sensitivity_path(store, run_id).name}.damaged"
    if done:
        return (f"The saved sensitivity of run {run_id} was damaged ({why}); it was kept as "
                f"{kept} and the layers were measured again.")  # fmt: skip
    return (f"The saved sensitivity of run {run_id} is damaged ({why}): measure again (the "
            f"damaged file will be kept as {kept}).")  # fmt: skip


def cached_sensitivity(store, run_id: str) -> tuple[dict | None, str | None]:
    """The stored result with the run's bits, or ``None``; and a note when the file is
    damaged (it is measured again, the damaged file kept, by :func:`sensitivity_of`)."""
    run = store.get_run(run_id)
    result, why = _read(store, run)
    note = _damaged_note(store, run_id, why, done=False) if why else None
    return (_with_bits(result, run) if result else None), note


def _write(path, result: dict) -> None:
    """Atomic: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(result, allow_nan=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def sensitivity_of(store, run_id: str, *, recompute: bool = False) -> dict:
    """The run's sensitivity with its bits: the stored one, else measured now and stored.

    ``recompute`` measures again even when a result is stored. A damaged file is moved to
    ``sensitivity.json.damaged`` (nothing is lost) and the result carries a ``note``.
    """
    with _lock(store, run_id):
        run = store.get_run(run_id)
        result, why = _read(store, run)
        if result is not None and not recompute:
            return _with_bits(result, run)
        fresh = measure_run(store, run_id)  # first: a failed measurement changes no file
        path = sensitivity_path(store, run_id)
        if why is not None:
            os.replace(path, path.with_name(path.name + ".damaged"))
        _write(path, fresh)
        out = _with_bits(fresh, run)
        return {**out, "note": _damaged_note(store, run_id, why, done=True)} if why else out
