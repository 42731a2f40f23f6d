"""Export a finished run: its scheme, its curves, and its weights as packed integers.

``export_run`` writes, into one folder::

    scheme.json              bits per layer, accuracy, average bits, compression (+ convention)
    metrics.csv              one row per epoch of every stage
    layers.csv               final bits, scale and plane densities per quantized layer
    quantized.safetensors    packed sign-magnitude integers + scales; other tensors in float32
    float_model.safetensors  the same model's effective weights in float32 (size reference)
    export.json              the files and their measured sizes

Packed layout of one layer: see ``bsq_engine.core.packing`` (``n + 1`` bits per weight, sign
first, then the magnitude MSB first, bytes filled as ``numpy.packbits``). ``load_quantized``
rebuilds the model from ``quantized.safetensors`` alone, with exactly the run's effective
weights.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import stat
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from bsq_engine.core.packing import pack_bits, unpack_bits
from bsq_engine.core.quantize import bit_report, quantized_layers, scheme_summary
from bsq_engine.runs.export_target import export_target, move_into, stage_folder
from bsq_engine.runs.paths import checkpoint_path
from bsq_engine.training.checkpoint import CheckpointError, load_run_checkpoint
from bsq_engine.training.config import RunConfig, Stage
from bsq_engine.training.run_model import build_model, model_from_checkpoint, shape_of

__all__ = [
    "COUNTING_CONVENTION",
    "EXPORT_FORMAT",
    "export_run",
    "load_quantized",
    "load_run_model",
]

EXPORT_FORMAT = 1
COUNTING_CONVENTION = (
    "n_l counts magnitude bit planes (the sign is not counted, as in the paper); average bits "
    "= sum_l N_l n_l / N over quantized layers only (biases, BatchNorm and float-kept layers "
    "excluded); compression = 32 / average bits."
)
_META_KEY = "bsq_export"


# ---------------------------------------------------------------- loading a run
def load_run_model(store, run_id: str) -> tuple[nn.Module, RunConfig, dict]:
    """The model of a run's final checkpoint (stage ``done``), on the CPU, in eval mode.

    Returns ``(model, config, meta)``; raises :class:`CheckpointError` when the run has no
    final checkpoint (it never finished, or its folder was removed).
    """
    run = store.get_run(run_id)  # RunNotFound for an unknown id
    tensors, meta = load_run_checkpoint(checkpoint_path(store, run_id))
    if meta.get("stage") != Stage.DONE.value:
        raise CheckpointError(
            f"Run {run_id!r} has not finished (status {run['status']}, checkpoint at "
            f"{meta.get('stage')} epoch {meta.get('epoch')}); resume it with "
            f"`python -m bsq_engine resume {run_id}` and export it once finished."
        )
    config = RunConfig.from_dict(meta["config"])
    model = model_from_checkpoint(config, shape_of(config), tensors, meta)
    return model.eval(), config, meta


# ---------------------------------------------------------------- writing an export
def _quantized_tensors(model: nn.Module) -> tuple[dict, dict]:
    """Packed integers + scales of quantized layers, every other tensor in float32."""
    tensors, layers = {}, {}
    owned = set()
    for name, layer in quantized_layers(model):
        q = layer.integer_weight()  # S, signed
        tensors[f"{name}.qweight"] = pack_bits(q, layer.n_bits)
        tensors[f"{name}.scale"] = layer.scale.detach().float().reshape(1)
        layers[name] = {
            "n_bits": int(layer.n_bits),
            "shape": list(q.shape),
            "numel": q.numel(),
            "msb_offset": int(layer.msb_offset),
            "pruned": bool(layer.pruned),
            "fixed": True,
        }
        owned.update({f"{name}.weight", f"{name}.scale"})
    for key, value in model.state_dict().items():
        if key not in owned:
            tensors[key] = value.detach().float() if value.is_floating_point() else value
    return tensors, layers


def _float_tensors(model: nn.Module) -> dict:
    """The model as plain float32 tensors: effective weights instead of (w, scale)."""
    tensors = {}
    owned = set()
    for name, layer in quantized_layers(model):
        tensors[f"{name}.weight"] = layer.effective_weight().detach().float()
        owned.update({f"{name}.weight", f"{name}.scale"})
    for key, value in model.state_dict().items():
        if key not in owned:
            tensors[key] = value.detach().float() if value.is_floating_point() else value
    return tensors


def _save(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(cpu, str(path), metadata=metadata)


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def _layer_rows(model: nn.Module, config: RunConfig) -> list[dict]:
    """Final per-layer bits, scale and densities; one density column per plane (MSB first)."""
    rows = []
    scales = {n: float(m.scale.detach()) for n, m in quantized_layers(model)}
    for record in bit_report(model, config.max_bits):
        row = {
            "name": record["name"],
            "kind": record["kind"],
            "shape": "x".join(str(s) for s in record["shape"]),
            "n_bits": record["n_bits"],
            "n_weights": record["n_weights"],
            "scale": scales[record["name"]],
            "msb_offset": record["msb_offset"],
        }
        for b in range(config.max_bits):
            density = record["density"]
            row[f"density_b{b}"] = density[b] if b < len(density) else ""
        rows.append(row)
    return rows


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _scheme(run: dict, model: nn.Module, config: RunConfig, meta: dict) -> dict:
    summary = scheme_summary(model)
    scales = {n: float(m.scale.detach()) for n, m in quantized_layers(model)}
    shapes = {r["name"]: r["shape"] for r in bit_report(model)}
    return {
        "run_id": run["run_id"],
        "name": run.get("name"),
        "model": config.model,
        "dataset": config.dataset,
        "method": config.method,
        "alpha": config.used_alpha,
        "uniform_bits": config.uniform_bits if config.method == "uniform" else None,
        "act_bits": config.act_bits,
        "accuracy": run.get("accuracy"),
        "float_accuracy": run.get("float_accuracy") or meta.get("float_accuracy"),
        "avg_bits": summary["avg_bits"],
        "compression": _finite(summary["compression"]),
        "counting_convention": COUNTING_CONVENTION,
        "layers": [
            {**layer, "shape": shapes[layer["name"]], "scale": scales[layer["name"]]}
            for layer in summary["layers"]
        ],
        "config": config.to_dict(),
    }


_EXPORT_FILES = {
    "scheme": "scheme.json", "metrics": "metrics.csv", "layers": "layers.csv",
    "quantized": "quantized.safetensors", "float": "float_model.safetensors",
    "export": "export.json",
}  # fmt: skip


def _write_export(stage: Path, store, run: dict, model, config: RunConfig, meta: dict) -> dict:
    """Write every export file into ``stage``; returns ``{kind: path in stage}``."""
    run_id = run["run_id"]
    files = {kind: stage / name for kind, name in _EXPORT_FILES.items() if kind != "export"}
    files["scheme"].write_text(json.dumps(_scheme(run, model, config, meta), indent=2))
    epochs = [{k: v for k, v in row.items() if k != "run_id"} for row in store.epochs(run_id)]
    _write_csv(files["metrics"], epochs)
    _write_csv(files["layers"], _layer_rows(model, config))
    tensors, layers = _quantized_tensors(model)
    header = {"format": EXPORT_FORMAT, "run_id": run_id, "config": config.to_dict(),
              "model_args": shape_of(config), "layers": layers}  # fmt: skip
    _save(files["quantized"], tensors, {_META_KEY: json.dumps(header)})
    _save(files["float"], _float_tensors(model), {"run_id": run_id})
    mode = stat.S_IMODE(files["scheme"].stat().st_mode)  # the umask's choice for new files
    for kind in ("quantized", "float"):  # safetensors writes 0600; exports are for sharing
        os.chmod(files[kind], mode)
    return files


def export_run(store, run_id: str, out_dir: str | Path, *, force: bool = False) -> dict:
    """Write the export files of a finished run into ``out_dir`` (a new or empty folder;
    ``force`` replaces the export's own files in a non-empty one, and nothing else).
    Returns what ``export.json`` holds: ``{"files": {kind: path}, "quantized_bytes",
    "float_bytes", "size_ratio"}``. Files are written to a temp folder first, so a failure
    half-way leaves ``out_dir`` as it was."""
    out = export_target(out_dir, force)
    run = store.get_run(run_id)
    model, config, meta = load_run_model(store, run_id)
    stage = stage_folder(out)
    try:
        staged = _write_export(stage, store, run, model, config, meta)
        files = {kind: out / path.name for kind, path in staged.items()}
        result = {
            "run_id": run_id,
            "out_dir": str(out),
            "files": {kind: str(path) for kind, path in files.items()},
            "quantized_bytes": staged["quantized"].stat().st_size,
            "float_bytes": staged["float"].stat().st_size,
        }
        result["size_ratio"] = result["float_bytes"] / result["quantized_bytes"]
        (stage / "export.json").write_text(json.dumps(result, indent=2))
        move_into(stage, out)
    except OSError as exc:
        raise ValueError(
            f"cannot write the export to {out} ({exc.strerror or exc}); nothing there was "
            "changed. Choose a writable folder for --out."
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    result["files"]["export"] = str(out / "export.json")
    return result


# ---------------------------------------------------------------- reading an export
def _read_export(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise CheckpointError(f"No export at {path}; write one with `python -m bsq_engine export`.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(_META_KEY)
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}).") from exc
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a BSQ Explorer export.")
    header = json.loads(raw)
    if header.get("format", 0) > EXPORT_FORMAT:
        raise CheckpointError(f"{path} was written by a newer BSQ Explorer; upgrade to read it.")
    return tensors, header


def load_quantized(path: str | Path) -> nn.Module:
    """Rebuild the model of ``quantized.safetensors`` (no run store, no dataset needed).

    The quantized layers get their bit-widths, integer weights and scales back, so every
    effective weight ``scale * q / (2^n - 1)`` equals the exported run's; eval mode, CPU.
    """
    tensors, header = _read_export(Path(path).expanduser())
    config = RunConfig.from_dict(header["config"])
    model = build_model(config, header["model_args"], Stage.DONE, header["layers"])
    state = {}
    for name, info in header["layers"].items():
        q = unpack_bits(tensors.pop(f"{name}.qweight"), info["n_bits"], info["numel"])
        levels = max(2 ** info["n_bits"] - 1, 1)
        state[f"{name}.weight"] = (q.float() / levels).reshape(info["shape"])  # S, in [-1, 1]
        state[f"{name}.scale"] = tensors.pop(f"{name}.scale").reshape(())
    state.update(tensors)
    model.load_state_dict(state)
    return model.eval()
