"""The whole pipeline on tiny digits runs: hooks, records, determinism, stop, resume, cache."""

from __future__ import annotations

import threading

import pytest

from bsq_engine.training.callbacks import Callback
from bsq_engine.training.checkpoint import load_checkpoint, save_checkpoint
from bsq_engine.training.config import Stage
from bsq_engine.training.presets import make_config
from bsq_engine.training.trainer import DivergenceError, RunStopped, Trainer

_TINY = dict(
    pretrain_epochs=1, bsq_epochs=2, finetune_epochs=1, requant_interval=1,
    max_train=256, max_test=128,
)  # fmt: skip
_STEPS_PER_EPOCH = 4  # 256 samples / batch 64

_EPOCH_KEYS = {
    "stage", "epoch", "global_epoch", "train_loss", "train_acc", "test_loss", "test_acc",
    "reg", "alpha_reg", "lr", "avg_bits", "compression", "seconds", "step_ms",
}  # fmt: skip
_LAYER_KEYS = {
    "name", "n_bits", "n_weights", "density", "group_norm", "msb_offset", "kind", "shape",
}  # fmt: skip
_EVENT_KEYS = {
    "layer", "old_bits", "new_bits", "msb_dropped", "lsb_dropped", "grown", "stage", "epoch",
    "message",
}  # fmt: skip
_SUMMARY_KEYS = {
    "run_id", "model", "dataset", "method", "alpha", "float_accuracy", "accuracy",
    "avg_bits", "compression", "seconds", "layers",
}  # fmt: skip


class Recorder(Callback):
    """Keeps every hook call: ``calls`` in order (steps apart), plus the payloads."""

    def __init__(self):
        self.calls, self.steps, self.epochs, self.layers, self.events = [], [], [], [], []
        self.summary = None

    def on_run_start(self, trainer):
        self.calls.append(("run_start",))

    def on_stage_start(self, trainer, stage):
        self.calls.append(("stage_start", Stage(stage).value))

    def on_step_end(self, trainer, step):
        self.steps.append(step)

    def on_epoch_end(self, trainer, record, layers):
        self.calls.append(("epoch_end", record["stage"], record["epoch"]))
        self.epochs.append(record)
        self.layers.append(layers)

    def on_requantize(self, trainer, events):
        self.calls.append(("requantize", trainer.epoch))
        self.events.append(events)

    def on_stage_end(self, trainer, stage):
        self.calls.append(("stage_end", Stage(stage).value))

    def on_finish(self, trainer, summary):
        self.calls.append(("finish",))
        self.summary = summary


def _run(callbacks=(), cache_dir=None, **overrides) -> tuple[dict, Recorder]:
    """A tiny digits run (``_TINY`` + overrides) with a ``Recorder`` first in line."""
    recorder = Recorder()
    config = make_config(**(_TINY | overrides))
    summary = Trainer(config, [recorder, *callbacks], cache_dir=cache_dir).run()
    return summary, recorder


@pytest.fixture(scope="module")
def bsq_run() -> tuple[dict, Recorder]:
    return _run()


def _comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "seconds"}


# ---------------------------------------------------------------- hooks and records


def test_hooks_in_order(bsq_run):
    _, recorder = bsq_run
    assert recorder.calls == [
        ("run_start",),
        ("stage_start", "pretrain"),
        ("epoch_end", "pretrain", 1),
        ("stage_end", "pretrain"),
        ("stage_start", "bsq"),
        ("requantize", 1),
        ("epoch_end", "bsq", 1),
        ("requantize", 2),
        ("epoch_end", "bsq", 2),
        ("stage_end", "bsq"),
        ("stage_start", "finetune"),
        ("epoch_end", "finetune", 1),
        ("stage_end", "finetune"),
        ("finish",),
    ]
    assert len(recorder.steps) == 4 * _STEPS_PER_EPOCH
    assert [s["step"] for s in recorder.steps] == list(range(1, 17))
    assert {s["stage"] for s in recorder.steps[4:12]} == {"bsq"}


def test_epoch_records_have_the_documented_fields(bsq_run):
    _, recorder = bsq_run
    for record in recorder.epochs:
        assert set(record) == _EPOCH_KEYS, f"{record['stage']} record: {sorted(record)}"


def test_epoch_record_values(bsq_run):
    summary, recorder = bsq_run
    config = make_config(**_TINY)
    records = recorder.epochs
    assert [r["global_epoch"] for r in records] == [1, 2, 3, 4]
    for record in records:
        assert record["lr"] == pytest.approx(config.lr_at(record["stage"], record["epoch"]))
        assert 0.0 <= record["train_acc"] <= 1.0 and 0.0 <= record["test_acc"] <= 1.0
        assert record["seconds"] > 0 and record["step_ms"] > 0
        if record["stage"] == "bsq":
            assert record["reg"] > 0
            assert record["alpha_reg"] == pytest.approx(config.alpha * record["reg"])
        else:
            assert record["reg"] == 0.0 and record["alpha_reg"] == 0.0
        if record["stage"] != "pretrain":
            assert 0 <= record["avg_bits"] <= 8
            assert record["compression"] == pytest.approx(32 / record["avg_bits"])
    assert records[-1]["test_acc"] == summary["accuracy"]


def test_layer_snapshots_and_events(bsq_run):
    _, recorder = bsq_run
    assert recorder.layers[0] is None  # pretrain: no quantized layers yet
    for layers in recorder.layers[1:]:
        assert [layer["name"] for layer in layers] == ["fc1", "fc2", "fc3"]
        for layer in layers:
            assert set(layer) == _LAYER_KEYS
            assert len(layer["group_norm"]) == max(layer["n_bits"], 1)
    for events in recorder.events:
        for event in events:
            assert set(event) == _EVENT_KEYS
            assert event["stage"] == "bsq" and event["message"].startswith(event["layer"])


def test_summary(bsq_run):
    summary, recorder = bsq_run
    assert set(summary) >= _SUMMARY_KEYS
    assert summary is recorder.summary
    # The run's status is the store's business (bsq_engine.runs.status), not the trainer's.
    assert "status" not in summary
    assert (summary["model"], summary["dataset"]) == ("mlp", "digits")
    assert summary["method"] == "bsq" and summary["alpha"] == 0.2
    assert 0.0 < summary["float_accuracy"] <= 1.0
    assert [layer["name"] for layer in summary["layers"]] == ["fc1", "fc2", "fc3"]
    weights = sum(layer["n_weights"] for layer in summary["layers"])
    bits = sum(layer["n_weights"] * layer["n_bits"] for layer in summary["layers"])
    assert summary["avg_bits"] == pytest.approx(bits / weights)
    # the last snapshot (finetune) shows the scheme fixed by the final re-quantization
    final = [
        {k: layer[k] for k in ("name", "n_bits", "n_weights")} for layer in recorder.layers[-1]
    ]
    assert final == summary["layers"]


def test_deterministic_with_a_seed(bsq_run):
    first, recorder = bsq_run
    second, again = _run()
    assert _comparable(second) == _comparable(first)
    strip = ("seconds", "step_ms")
    assert [{k: v for k, v in r.items() if k not in strip} for r in again.epochs] == [
        {k: v for k, v in r.items() if k not in strip} for r in recorder.epochs
    ]


# ---------------------------------------------------------------- failure modes


def test_divergence_raises_with_advice():
    with pytest.raises(DivergenceError) as info:
        _run(lr=1e6)
    message = str(info.value)
    assert "alpha" in message and "learning rate" in message
    assert "bsq epoch" in message


class _StopAt(Callback):
    def __init__(self, event: threading.Event, step: int):
        self.event, self.step, self.seen = event, step, 0

    def on_step_end(self, trainer, step):
        self.seen = step["step"]
        if step["step"] == self.step:
            self.event.set()


@pytest.mark.parametrize("stop_step", [2, 4, 7])  # mid-epoch, last step of pretrain, in BSQ
def test_stop_event_raises_within_one_step(stop_step):
    stop = threading.Event()
    stopper = _StopAt(stop, stop_step)
    config = make_config(**_TINY)
    with pytest.raises(RunStopped, match="stopped by the user"):
        Trainer(config, [stopper], stop_event=stop).run()
    assert stopper.seen == stop_step


class _Teardown(Callback):
    def __init__(self):
        self.calls = []

    def on_finish(self, trainer, summary):
        self.calls.append("finish")

    def on_teardown(self, trainer):
        self.calls.append("teardown")


def test_teardown_fires_last_whether_the_run_finishes_or_stops():
    done = _Teardown()
    Trainer(make_config(**_TINY), [done]).run()
    assert done.calls == ["finish", "teardown"]
    stop, stopped = threading.Event(), _Teardown()
    with pytest.raises(RunStopped):
        Trainer(make_config(**_TINY), [_StopAt(stop, 2), stopped], stop_event=stop).run()
    assert stopped.calls == ["teardown"]


# ---------------------------------------------------------------- uniform baseline


def test_uniform_method_runs_qat_with_k_bits_everywhere():
    summary, recorder = _run(method="uniform", uniform_bits=3)
    starts = [c[1] for c in recorder.calls if c[0] == "stage_start"]
    assert starts == ["pretrain", "qat", "finetune"]
    assert not any(c[0] == "requantize" for c in recorder.calls)
    assert {layer["n_bits"] for layer in summary["layers"]} == {3}
    assert summary["avg_bits"] == pytest.approx(3.0) and summary["alpha"] is None
    for record, layers in zip(recorder.epochs[1:], recorder.layers[1:]):
        assert record["reg"] == 0.0 and record["avg_bits"] == pytest.approx(3.0)
        assert {layer["n_bits"] for layer in layers} == {3}


# ---------------------------------------------------------------- resume and cache


class _SaveAt(Callback):
    """Saves a checkpoint at the end of one (stage, epoch), like CheckpointCallback would."""

    def __init__(self, path, stage: str, epoch: int):
        self.path, self.stage, self.epoch = path, stage, epoch

    def on_epoch_end(self, trainer, record, layers):
        if (record["stage"], record["epoch"]) == (self.stage, self.epoch):
            save_checkpoint(self.path, *trainer.checkpoint_state())


@pytest.mark.parametrize(
    ("overrides", "at", "with_momentum"),
    [
        # requant_interval 2: the checkpoint after BSQ epoch 1 carries momentum buffers
        (dict(bsq_epochs=3, requant_interval=2), 1, True),
        # a strong alpha (below the ln(10) cap) with a large lr re-quantizes layers to fewer
        # bits at epoch 2: resized layers on resume
        (dict(bsq_epochs=3, requant_interval=1, alpha=2.2, lr=2.0), 2, False),
    ],
    ids=["momentum", "resized_layers"],
)
def test_resume_from_mid_bsq_checkpoint_matches_uninterrupted_run(
    tmp_path, overrides, at, with_momentum
):
    path = tmp_path / "mid.safetensors"
    full, recorder = _run([_SaveAt(path, "bsq", at)], **overrides)
    tensors, meta = load_checkpoint(path)
    assert (meta["stage"], meta["epoch"], meta["global_epoch"]) == ("bsq", at, at + 1)
    assert any(k.startswith("optim.") for k in tensors) is with_momentum
    if not with_momentum:
        assert any(layer["n_bits"] < 8 for layer in meta["layers"].values())

    resumed_recorder = Recorder()
    config = make_config(**(_TINY | overrides))
    resumed = Trainer(config, [resumed_recorder]).run(resume=(tensors, meta))
    first = resumed_recorder.epochs[0]
    assert (first["stage"], first["epoch"], first["global_epoch"]) == ("bsq", at + 1, at + 2)
    assert resumed_recorder.epochs[-1]["global_epoch"] == recorder.epochs[-1]["global_epoch"]
    assert resumed["accuracy"] == full["accuracy"]
    assert resumed["float_accuracy"] == full["float_accuracy"]
    assert resumed["layers"] == full["layers"]
    assert resumed_recorder.epochs[-1]["test_loss"] == pytest.approx(
        recorder.epochs[-1]["test_loss"], rel=1e-6
    )


@pytest.mark.parametrize(
    ("overrides", "stage"),
    [(dict(alpha=2.2, lr=2.0), "finetune"), (dict(method="uniform"), "qat")],
    ids=["mid_finetune_fixed_scheme", "mid_qat"],
)
def test_resume_in_later_stages_matches_uninterrupted_run(tmp_path, overrides, stage):
    settings = dict(finetune_epochs=2, **overrides)
    path = tmp_path / "mid.safetensors"
    full, _ = _run([_SaveAt(path, stage, 1)], **settings)
    resumed = Trainer(make_config(**(_TINY | settings))).run(resume=load_checkpoint(path))
    assert resumed["accuracy"] == full["accuracy"]
    assert resumed["layers"] == full["layers"]


class _SaveOnFinish(Callback):
    def __init__(self, path):
        self.path = path

    def on_finish(self, trainer, summary):  # what CheckpointCallback writes last
        save_checkpoint(self.path, *trainer.checkpoint_state())


def test_resume_from_done_checkpoint_only_finishes(tmp_path):
    """A run that died after its final checkpoint (stage "done") resumes straight to finish."""
    path = tmp_path / "done.safetensors"
    full, _ = _run([_SaveOnFinish(path)])
    tensors, meta = load_checkpoint(path)
    assert meta["stage"] == "done"
    recorder = Recorder()
    resumed = Trainer(make_config(**_TINY), [recorder]).run(resume=(tensors, meta))
    assert recorder.steps == [] and recorder.epochs == []
    assert resumed["accuracy"] == full["accuracy"] and resumed["layers"] == full["layers"]


def test_float_cache_skips_pretraining_the_second_time(tmp_path):
    class CountPretrainSteps(Callback):
        count = 0

        def on_step_end(self, trainer, step):
            self.count += step["stage"] == "pretrain"

    first_counter, second_counter = CountPretrainSteps(), CountPretrainSteps()
    first, _ = _run([first_counter], cache_dir=tmp_path / "cache")
    assert first_counter.count == _STEPS_PER_EPOCH
    assert len(list((tmp_path / "cache").iterdir())) == 1
    second, recorder = _run([second_counter], cache_dir=tmp_path / "cache")
    assert second_counter.count == 0
    assert second["float_accuracy"] == first["float_accuracy"]
    assert _comparable(second) == _comparable(first)  # the loaded model trains the same
    reused = recorder.epochs[0]
    assert reused["stage"] == "pretrain" and reused.get("reused") is True
    assert recorder.calls[:4] == [
        ("run_start",),
        ("stage_start", "pretrain"),
        ("epoch_end", "pretrain", 1),
        ("stage_end", "pretrain"),
    ]


def test_float_cache_can_be_bypassed(tmp_path):
    class Count(Callback):
        count = 0

        def on_step_end(self, trainer, step):
            self.count += step["stage"] == "pretrain"

    _run(cache_dir=tmp_path)
    counter = Count()
    _run([counter], cache_dir=tmp_path, reuse_pretrained=False)
    assert counter.count == _STEPS_PER_EPOCH
