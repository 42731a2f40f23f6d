"""How runs and their metric rows are written: ids, names, JSON and row codecs.

Records come in as dicts (the shapes of docs/ARCHITECTURE.md) and go out as bind tuples in
column order; JSON columns come back decoded.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from bsq_engine.training.config import alpha_of

__all__ = [
    "EPOCH_COLS",
    "EVENT_COLS",
    "LAYER_COLS",
    "STEP_COLS",
    "check_id",
    "decode_layer",
    "decode_sweep",
    "default_name",
    "dumps",
    "new_id",
    "stored_alpha",
    "table_rows",
    "upsert_sql",
]

EPOCH_COLS = (
    "stage", "epoch", "global_epoch", "train_loss", "train_acc", "test_loss", "test_acc", "reg",
    "alpha_reg", "lr", "avg_bits", "compression", "seconds", "step_ms",
)  # fmt: skip
LAYER_COLS = (
    "stage", "epoch", "global_epoch", "layer_index", "name", "n_bits", "n_weights",
    "density_json", "group_norm_json", "msb_offset",
)  # fmt: skip
EVENT_COLS = (
    "stage", "epoch", "layer", "old_bits", "new_bits", "msb_dropped", "lsb_dropped", "grown",
    "message",
)  # fmt: skip
STEP_COLS = (
    "stage", "epoch", "step", "epoch_frac", "wall", "time", "loss", "ce", "reg", "batch_acc", "lr",
)  # fmt: skip
_COLS = {"epochs": EPOCH_COLS, "layers": LAYER_COLS, "events": EVENT_COLS,
         "step_points": STEP_COLS}  # fmt: skip
_KEYS = {"epochs": ("stage", "epoch"), "layers": ("name",), "events": ("stage", "epoch", "layer"),
         "step_points": ("stage", "epoch", "step")}  # fmt: skip
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def new_id() -> str:
    """Sortable by creation time, unique enough: ``20261128-104501-a3f9``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    """Tensors / numpy scalars and arrays, enums, paths: whatever a config may carry."""
    for attr in ("tolist", "item"):
        if hasattr(obj, attr):
            return getattr(obj, attr)()
    return str(obj)


def _scalar(value: Any) -> Any:
    """sqlite3 cannot bind numpy/torch scalars; unwrap them."""
    return value.item() if hasattr(value, "item") else value


def upsert_sql(table: str) -> str:
    """Upsert: a resumed run re-writing a row replaces it instead of duplicating it."""
    cols = ("run_id", *_COLS[table])
    return (
        f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    )


def table_rows(run_id: str, records: list[dict], table: str) -> list[tuple]:
    """Bind tuples in column order; extra keys are ignored, missing key columns refused."""
    for record in records:
        absent = [k for k in _KEYS[table] if record.get(k) is None]
        if absent:
            raise ValueError(f"A {table} record needs {', '.join(absent)}; got {sorted(record)}.")
    return [(run_id, *(_scalar(r.get(c)) for c in _COLS[table])) for r in records]


def stored_alpha(config: dict) -> float | None:
    """The runs table's alpha: NULL for a uniform run, whose config alpha is unused."""
    return alpha_of(config["method"], config["alpha"])


def default_name(config: dict) -> str:
    """``lenet5-mnist-bsq-a0.005``; refuses a config without the columns the runs table keeps."""
    missing = [k for k in ("model", "dataset", "method", "alpha") if k not in config]
    if missing:
        raise ValueError(f"Run config is missing {', '.join(missing)}; pass RunConfig.to_dict().")
    return f"{config['model']}-{config['dataset']}-{config['method']}-a{float(config['alpha']):g}"


MAX_NAME, MAX_TAG, MAX_TAGS, MAX_NOTE = 120, 40, 20, 4000


def clean_annotations(name=None, tags=None, note=None) -> dict:
    """Validated ``{column: value}`` for the fields given (None = leave unchanged).

    Names and tags are trimmed; tags are de-duplicated in order and may not contain commas
    (lists of them are typed comma-separated); an empty note clears it.
    """
    out: dict = {}
    if name is not None:
        name = " ".join(str(name).split())
        if not name or len(name) > MAX_NAME:
            raise ValueError(f"A run name needs 1 to {MAX_NAME} characters; got {len(name)}.")
        out["name"] = name
    if tags is not None:
        clean = list(dict.fromkeys(" ".join(str(t).split()) for t in tags))
        clean = [t for t in clean if t]
        bad = [t for t in clean if "," in t or len(t) > MAX_TAG]
        if bad or len(clean) > MAX_TAGS:
            raise ValueError(f"Tags are up to {MAX_TAGS} words of at most {MAX_TAG} characters "
                             f"without commas; check {bad or clean[MAX_TAGS:]}.")  # fmt: skip
        out["tags_json"] = json.dumps(clean)
    if note is not None:
        note = str(note).strip()
        if len(note) > MAX_NOTE:
            raise ValueError(f"A note has at most {MAX_NOTE} characters; got {len(note)}.")
        out["note"] = note or None
    return out


def check_id(run_id: str) -> None:
    """Ids become folder names, so nothing that could escape ``runs/``."""
    if not _SAFE_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"Invalid run id {run_id!r}; use letters, digits, '.', '_' or '-'.")


def decode_sweep(row: dict) -> dict:
    row["config"] = json.loads(row.pop("config_json"))
    return row


def decode_layer(row: dict) -> dict:
    row["density"] = json.loads(row.pop("density_json") or "null")
    row["group_norm"] = json.loads(row.pop("group_norm_json") or "null")
    return row
