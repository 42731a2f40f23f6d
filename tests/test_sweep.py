"""Alpha sweeps through a real job manager: one shared float model, progress counts."""

from __future__ import annotations

import pytest

from bsq_engine.runs.paths import cache_dir
from bsq_engine.runs.sweep import log_alphas, run_sweep_blocking, start_sweep, sweep_progress

TINY = dict(
    pretrain_epochs=2, bsq_epochs=2, finetune_epochs=1, requant_interval=1, max_train=256,
    max_test=128,
)  # fmt: skip


def test_log_alphas_spacing_and_rounding():
    assert log_alphas(1e-3, 1e-1, 3) == [0.001, 0.01, 0.1]
    assert log_alphas(2e-3, 1e-2, 4) == [0.002, 0.00342, 0.00585, 0.01]
    assert log_alphas(0.05, 0.05, 1) == [0.05]
    for bad in ((0, 1, 3), (1, 0.5, 3), (1e-3, 1e-2, 0)):
        with pytest.raises(ValueError):
            log_alphas(*bad)


def test_sweep_validation_creates_nothing(manager):
    with pytest.raises(ValueError, match="at least one alpha or one uniform bit-width"):
        start_sweep(manager, model="mlp", dataset="digits", alphas=[])
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        start_sweep(manager, model="mlp", dataset="digits", alphas=[0.1, -1.0], overrides=TINY)
    assert manager.store.list_sweeps() == [] and manager.store.list_runs() == []


@pytest.mark.slow  # trains for seconds
def test_sweep_runs_share_one_pretrained_model(manager):
    sweep_id = start_sweep(
        manager, model="mlp", dataset="digits", alphas=[0.1, 2.0], uniform_bits=[4],
        overrides=TINY,
    )  # fmt: skip
    early = sweep_progress(manager.store, sweep_id)
    assert early["total"] == 3 and not early["done"] and early["counts"].get("queued", 0) >= 2
    seen = []
    final = run_sweep_blocking(manager, sweep_id, poll=0.05, on_progress=seen.append)
    assert final["done"] and final["finished"] == 3 and final["fraction"] == 1.0
    assert final["counts"] == {"finished": 3} and seen[-1] == final
    fractions = [p["fraction"] for p in seen]
    assert fractions == sorted(fractions)

    runs = [manager.store.get_run(r) for r in final["run_ids"]]
    assert [r["name"] for r in runs] == ["α=0.1", "α=2", "uniform 4-bit"]
    assert [r["config"]["method"] for r in runs] == ["bsq", "bsq", "uniform"]
    assert runs[2]["config"]["uniform_bits"] == 4 and runs[2]["summary"]["avg_bits"] == 4.0
    assert len({r["summary"]["float_accuracy"] for r in runs}) == 1
    assert len(list(cache_dir(manager.store.home).glob("*.safetensors"))) == 1
    first, *later = [manager.store.epochs(r["run_id"]) for r in runs]
    pretrain = [e for e in first if e["stage"] == "pretrain"]
    for epochs in later:  # the cached curve, not a second pretraining
        assert [e for e in epochs if e["stage"] == "pretrain"] == [
            {**e, "run_id": epochs[0]["run_id"]} for e in pretrain
        ]
    sweep = manager.store.get_sweep(sweep_id)
    assert sweep["config"]["alphas"] == [0.1, 2.0] and sweep["name"].startswith("mlp-digits")
