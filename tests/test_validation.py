"""One validation layer: every value either builds a RunConfig or raises the one error type,
naming the field (in the CLI: the flag; in the form: the label), all problems at once."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsq_engine.cli import main as cli
from bsq_engine.cli import train as cli_train
from bsq_engine.runs.store import RunStore
from bsq_engine.training.config import ConfigError, RunConfig
from bsq_engine.training.validation import alpha_max
from dashboard.ui.widgets import FORM_LABELS, build_config

FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
# A field's value can make a rule of another field fail (cross-field rules).
RELATED = {
    "max_bits": {"n_bits", "uniform_bits"},
    "method": {"alpha", "uniform_bits"},
    "dataset": {"alpha"},
}
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["mlp", "digits", "bsq", "uniform", "cpu", "cuda:abc", "4", "ab", "2"]),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from(FIELDS), value=ANY_VALUE)
def test_any_value_builds_or_names_its_field(field, value):
    try:
        config = RunConfig(**{field: value})
    except ConfigError as exc:
        assert exc.fields, "an error lists at least one problem"
        assert set(exc.fields) <= {field} | RELATED.get(field, set()), str(exc)
        assert str(exc).startswith(exc.fields[0])
    else:  # a config that builds survives JSON and validates again
        assert RunConfig.from_dict(config.to_dict()) == config


_INDEPENDENT = [f for f in FIELDS if f not in RELATED and f != "model"]


@settings(max_examples=150, deadline=None)
@given(values=st.dictionaries(st.sampled_from(_INDEPENDENT), ANY_VALUE, min_size=2, max_size=6))
def test_every_problem_is_reported_at_once(values):
    alone = set()
    for field, value in values.items():
        try:
            RunConfig(**{field: value})
        except ConfigError as exc:
            alone |= set(exc.fields)
    try:
        RunConfig(**values)
    except ConfigError as exc:
        assert set(exc.fields) == alone, str(exc)
    else:
        assert alone == set()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [  # the values issue 10 found crashing or accepted
        ({"act_bits": "4"}, "act_bits"), ({"device": None}, "device"),
        ({"lr_milestones": "ab"}, "lr_milestones"), ({"version": "2"}, "version"),
        ({"n_bits": True}, "n_bits"), ({"n_bits": 4.5}, "n_bits"), ({"seed": "abc"}, "seed"),
        ({"momentum": 5}, "momentum"), ({"device": "cuda:abc"}, "device"),
        ({"reuse_pretrained": "no"}, "reuse_pretrained"), ({"seed": 10**23}, "seed"),
        ({"lr": 1e308}, "lr"), ({"alpha": 1e308}, "alpha"), ({"bsq_epochs": 10**23}, "bsq_epochs"),
        ({"name": "a\nb"}, "name"), ({"name": "x" * 100_000}, "name"),
        ({"batch_size": 10**9}, "batch_size"), ({"max_train": 10**12}, "max_train"),
        ({"float_shortcuts": 1}, "float_shortcuts"), ({"version": 99}, "version"),
    ],
)  # fmt: skip
def test_issue_values_are_refused_with_their_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        RunConfig(**kwargs)
    assert info.value.fields == [field]


def test_alpha_cap_is_ln_classes_and_says_why():
    assert alpha_max("digits") == pytest.approx(math.log(10))
    assert alpha_max("cifar100") == pytest.approx(math.log(100))
    RunConfig(alpha=2.3)  # just below ln(10) = 2.303
    with pytest.raises(ConfigError, match="collapses to chance accuracy"):
        RunConfig(alpha=2.31)
    RunConfig(method="uniform", alpha=1e6)  # not used by uniform runs: not capped


def test_cross_field_message_names_the_other_field():
    with pytest.raises(ConfigError) as info:
        RunConfig(n_bits=16, max_bits=2)
    assert info.value.fields == ["n_bits"]  # not uniform_bits: a BSQ run does not use it
    text = info.value.render({"n_bits": "--n-bits", "max_bits": "--max-bits"})
    assert text.startswith("--n-bits must be between 1 and --max-bits (2)")


# ---------------------------------------------------------------- the form
def test_form_names_its_labels_and_lists_every_problem():
    with pytest.raises(ValueError) as info:
        build_config({"batch_size": 0, "alpha": -1.0, "lr": "fast", "act_bits": "float"})
    text = str(info.value)
    for field in ("batch_size", "alpha", "lr"):
        assert FORM_LABELS[field] in text
    assert "Traceback" not in text and text.count(";") == 2  # three problems, one message


def test_form_bsq_with_narrow_max_bits_names_starting_bits():
    with pytest.raises(ValueError) as info:
        build_config({"n_bits": 16, "max_bits": 2, "method": "bsq"})
    assert "Starting bits (n_bits) must be between 1 and Max bits on overflow (2)" in str(
        info.value
    )
    assert "uniform" not in str(info.value).lower()


# ---------------------------------------------------------------- the CLI
@pytest.fixture
def no_training(monkeypatch):
    """Accepted arguments would train: record them instead (a valid config is all we need)."""
    started = []

    def fake(store, run_id, *, resume, as_json):
        started.append(store.get_run(run_id)["config"])
        return 0

    monkeypatch.setattr(cli_train, "run_foreground", fake)
    return started


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train", "--max-bits", "-1"], "--max-bits"),
        (["sweep", "--model", "mlp", "--dataset", "digits", "--alphas", "0.1",
          "--uniform-bits", "0"], "--uniform-bits"),
        (["train", "--method", "uniform", "--alpha", "0.1"], "--alpha"),
        (["train", "--bits", "3"], "--bits"),
        (["train", "--epochs", str(10**23)], "--epochs"),
        (["train", "--name", "two\nlines"], "--name"),
        (["train", "--name", "n" * 100_000], "--name"),
        (["train", "--seed", str(10**23)], "--seed"),
        (["train", "--lr", "1e308"], "--lr"),
        (["train", "--alpha", "1e308"], "--alpha"),
        (["train", "--device", "cuda:abc"], "--device"),
        (["train", "--batch-size", str(10**9)], "--batch-size"),
        (["train", "--requant-interval", str(10**9)], "--requant-interval"),
        (["train", "--max-train", str(10**15)], "--max-train"),
    ],
)  # fmt: skip
def test_cli_names_the_flag(capsys, no_training, argv, flag):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert flag in err and "Traceback" not in err
    assert no_training == [] and RunStore().list_runs() == []


def test_cli_lists_every_problem_at_once(capsys, no_training):
    argv = ["train", "--epochs", "0", "--batch-size", "0", "--alpha", "-1", "--lr", "0"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert all(f in err for f in ("--epochs", "--batch-size", "--alpha", "--lr"))


_FLAGS = ["--n-bits", "--max-bits", "--act-bits", "--epochs", "--pretrain-epochs",
          "--finetune-epochs", "--requant-interval", "--lr", "--batch-size", "--seed",
          "--device", "--max-train", "--max-test", "--alpha", "--bits", "--name",
          "--method"]  # fmt: skip
_TOKENS = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["float", "cuda", "cpu", "bsq", "uniform", "", "x", "1e23", "-0"]),
    st.text(max_size=8),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pairs=st.lists(st.tuples(st.sampled_from(_FLAGS), _TOKENS), min_size=1, max_size=4))
def test_any_cli_arguments_exit_0_or_2_with_one_line(capsys, no_training, pairs):
    argv = ["train"] + [f"{flag}={value}" for flag, value in pairs]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert "--" in err or "python -m bsq_engine" in err
    else:
        assert code == 0 and no_training  # accepted: a config that validates was stored
        RunConfig.from_dict(no_training[-1])


def test_stored_configs_skip_the_new_run_bounds_but_not_the_types():
    old = RunConfig().to_dict() | {"alpha": 50.0, "bsq_epochs": 20_000, "name": "two\nlines"}
    with pytest.raises(ConfigError):
        RunConfig(**old)  # a new run: refused
    assert RunConfig.from_dict(old).alpha == 50.0  # a run stored before the bounds: loads
    with pytest.raises(ConfigError, match="alpha must be >= 0"):
        RunConfig.from_dict(old | {"alpha": -1.0})
    RunConfig(alpha=0.2)  # the lenient context does not leak out of from_dict
    with pytest.raises(ConfigError):
        RunConfig(alpha=50.0)
