"""Shared helpers for Streamlit AppTest page tests (Train, Runs, Pareto, Compare, ...).

Import what you need in a test module; the ``bsq_home`` fixture (an empty store, its job
manager shut down afterwards) comes from ``conftest.py``::

    from apptest_helpers import make_run, open_page, run_until, page_text

- ``make_run(store, ...)``: a realistic run written through the ``RunStore`` API only
  (config, epochs of every stage, layer snapshots, events, summary): instant, no training.
- ``tiny_config(...)`` / ``train_run(...)``: a real run of ``shared.TINY`` (~1 s on a CPU).
- ``open_page(page, **query)``: ``AppTest`` of ``app.py`` (the real router) on one page.
- ``run_until(at, predicate)``: AppTest never fires ``st.fragment(run_every=...)``, so poll
  by calling ``at.run()`` until ``predicate(at)`` holds.
- ``page_text(at)`` / ``chart_titles(at)``: everything readable on the page, for asserts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from shared import TINY, wait_for
from streamlit.testing.v1 import AppTest

from bsq_engine.runs.store import RunStore
from bsq_engine.training.config import RunConfig
from bsq_engine.training.presets import make_config

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
_TEXT_ELEMENTS = ("markdown", "caption", "success", "info", "warning", "error", "title",
                  "subheader", "header", "text")  # fmt: skip
_LAYERS = (("fc1", 64 * 256, 8), ("fc2", 256 * 128, 8), ("fc3", 128 * 10, 8))


def tiny_config(**overrides) -> RunConfig:
    """The ``tiny_config`` fixture's config with ``overrides`` (model, method, alpha, ...)."""
    return make_config(**{**TINY, **overrides})


def train_run(home: Path, timeout: float = 120, **overrides) -> str:
    """Really train ``tiny_config(**overrides)`` in ``home``'s job manager; its run id."""
    from bsq_engine.runs.jobs import get_manager

    manager = get_manager(home)
    run_id = manager.start(tiny_config(**overrides))
    status = manager.wait(run_id, timeout)
    assert status not in ("queued", "running"), f"run {run_id} still {status} after {timeout}s"
    return run_id


def _layer_records(bits: Sequence[int], max_bits: int, progress: float) -> list[dict]:
    layers = []
    for (name, n_weights, _), n in zip(_LAYERS, bits):
        density = [round(0.05 + 0.4 * (1 - progress) * (j + 1) / max(n, 1), 3) for j in range(n)]
        layers.append({"name": name, "n_bits": n, "n_weights": n_weights, "kind": "linear",
                       "density": density, "group_norm": [10 * d for d in density],
                       "msb_offset": max_bits - n if n else 0})  # fmt: skip
    return layers


def make_run(
    store: RunStore,
    *,
    status: str = "finished",
    name: str | None = None,
    accuracy: float = 0.9,
    float_accuracy: float = 0.95,
    bits: Sequence[int] = (4, 3, 5),
    error: str | None = None,
    sweep_id: str | None = None,
    owner: str | None = None,
    **config,
) -> str:
    """Write a run as the trainer would: queued -> running -> epochs -> ``status``.

    ``config`` overrides ``tiny_config()`` fields (model, dataset, method, alpha, ...).
    ``bits`` are the final bits of three layers (fc1, fc2, fc3). A finished run gets a
    summary whose accuracy/avg_bits/compression follow from ``accuracy`` and ``bits``.
    """
    cfg = tiny_config(**config)
    run_id = store.create_run(cfg.to_dict(), name=name, sweep_id=sweep_id, owner=owner)
    if status == "queued":
        return run_id
    store.set_status(run_id, "running")
    store.run_dir(run_id)  # a real run has its folder from its first step (resume checks it)
    n_total = sum(n for _, n, _ in _LAYERS)
    avg_bits = sum(n * b for (_, n, _), b in zip(_LAYERS, bits)) / n_total
    stages = [("pretrain", cfg.pretrain_epochs), (cfg.stages[1].value, cfg.bsq_epochs),
              ("finetune", cfg.finetune_epochs)]  # fmt: skip
    total, g = sum(n for _, n in stages), 0
    for stage, count in stages:
        for epoch in range(1, count + 1):
            g += 1
            frac = g / total
            quant = stage != "pretrain"
            now_bits = [round(cfg.n_bits - (cfg.n_bits - b) * frac) for b in bits]
            avg = avg_bits if stage == "finetune" else sum(
                n * b for (_, n, _), b in zip(_LAYERS, now_bits)) / n_total  # fmt: skip
            acc = float_accuracy if stage == "pretrain" else accuracy
            store.add_epochs(run_id, [{
                "stage": stage, "epoch": epoch, "global_epoch": g, "train_loss": 1.5 - frac,
                "test_loss": 1.6 - frac, "train_acc": acc, "test_acc": acc,
                "reg": 5.0 if stage == "bsq" else 0.0,
                "alpha_reg": 5.0 * cfg.alpha if stage == "bsq" else 0.0, "lr": cfg.lr,
                "avg_bits": avg if quant else None, "compression": 32 / avg if quant else None,
                "seconds": 0.5, "step_ms": 2.0,
            }])  # fmt: skip
            if quant:
                layer_bits = bits if stage == "finetune" else now_bits
                store.add_layers(run_id, stage, epoch, g,
                                 _layer_records(layer_bits, cfg.max_bits, frac))  # fmt: skip
    store.add_events(run_id, [
        {"layer": name, "old_bits": cfg.n_bits, "new_bits": b, "msb_dropped": cfg.n_bits - b,
         "lsb_dropped": 0, "grown": 0, "stage": cfg.stages[1].value, "epoch": cfg.bsq_epochs,
         "message": f"{name}: {cfg.n_bits} -> {b} bits"}
        for (name, _, _), b in zip(_LAYERS, bits) if b != cfg.n_bits
    ])  # fmt: skip
    if status == "finished":
        store.finish(run_id, {
            "run_id": run_id, "status": "finished", "model": cfg.model, "dataset": cfg.dataset,
            "method": cfg.method, "alpha": cfg.alpha, "float_accuracy": float_accuracy,
            "accuracy": accuracy, "avg_bits": avg_bits, "compression": 32 / avg_bits,
            "seconds": 0.5 * total,
            "layers": [{"name": n, "n_bits": b, "n_weights": w}
                       for (n, w, _), b in zip(_LAYERS, bits)],
        })  # fmt: skip
    elif status != "running":
        store.set_status(run_id, status, error=error)
    return run_id


def open_page(page: str | None = None, *, timeout: float = 60, **query: str) -> AppTest:
    """``app.py`` through the real router, switched to ``page`` (e.g. "pages/runs.py")."""
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    for key, value in query.items():
        at.query_params[key] = value
    if page is not None:
        at.switch_page(page)
    return at.run()


def run_until(
    at: AppTest, predicate: Callable[[AppTest], bool], timeout: float = 120, every: float = 0.3
) -> AppTest:
    """Re-run the page until ``predicate(at)`` is true (AppTest never fires run_every)."""

    def rerun_holds() -> bool:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return predicate(at)

    wait_for(
        rerun_holds, timeout, every=every, what=lambda: f"the page; it shows:\n{page_text(at)}"
    )
    return at


def chart_titles(at: AppTest) -> list[str]:
    """Titles of every Plotly and Altair/Vega-Lite chart on the page."""
    titles = []
    for kind in ("plotly_chart", "arrow_vega_lite_chart", "vega_lite_chart"):
        for element in at.get(kind):
            spec = json.loads(element.proto.spec or "{}")
            title = (spec.get("layout") or {}).get("title") or spec.get("title")
            if isinstance(title, dict):
                title = title.get("text")
            if title:
                titles.append(str(title))
    return titles


_MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def shown(value: object) -> str:
    """An element's Markdown as a browser shows it: ``plain.md``'s backslash escapes
    removed."""
    return _MD_ESCAPE.sub(r"\1", str(value))


def page_text(at: AppTest) -> str:
    """Every text element, metric, button label and chart title, one per line; Markdown
    backslash escapes (``plain.md``) are removed, as a browser shows the text."""
    parts = []
    for kind in _TEXT_ELEMENTS:
        parts += [shown(e.value) for e in at.get(kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    parts += [b.label for b in at.button]
    parts += chart_titles(at)
    return "\n".join(parts)


def button(at: AppTest, label: str):
    """The (first) button with exactly this label."""
    for b in at.button:
        if b.label == label:
            return b
    raise AssertionError(f"no button {label!r}; buttons: {[b.label for b in at.button]}")
