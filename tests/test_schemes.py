"""The field's baselines in the BSQ pipeline: uniform with first/last at 8 bits, QAT of a
given scheme, HAWQ-style allocation; the bench facts every finished run carries."""

from __future__ import annotations

import pytest

from bsq_engine.runs.sweep import _sweep_configs
from bsq_engine.training.config import RunConfig, describe_method
from bsq_engine.training.diagnostics import stage_warnings
from bsq_engine.training.trainer import Trainer


def _bits(summary: dict) -> list[int]:
    return [layer["n_bits"] for layer in summary["layers"]]


def test_uniform_with_first_and_last_layers_at_8_bits(tiny_config):
    config = tiny_config.replace(method="uniform", uniform_bits=2, first_last_bits=8)
    summary = Trainer(config).run()
    assert _bits(summary) == [8, 2, 8]
    assert summary["first_last_bits"] == 8 and summary["plan"]["bits"] == [8, 2, 8]
    # bench facts: test-set size and classes for intervals, BOPs, accuracy before finetune
    assert summary["test_size"] == 128 and summary["num_classes"] == 10
    macs = {"fc1": 64 * 256, "fc2": 256 * 128, "fc3": 128 * 10}  # mlp: 64 -> 256 -> 128 -> 10
    assert summary["bops"] == 32 * (macs["fc1"] * 8 + macs["fc2"] * 2 + macs["fc3"] * 8)
    assert 0 <= summary["quant_stage_accuracy"] <= 1


def test_scheme_is_trained_as_given(tiny_config):
    summary = Trainer(tiny_config.replace(method="scheme", scheme=(6, 0, 3))).run()
    assert _bits(summary) == [6, 0, 3]  # a pruned layer (0 bits) is allowed, as BSQ makes
    assert summary["alpha"] is None


def test_scheme_of_the_wrong_length_says_how_many_layers(tiny_config):
    with pytest.raises(ValueError, match=r"3 quantized layers \(fc1, fc2, fc3\)"):
        Trainer(tiny_config.replace(method="scheme", scheme=(4, 4))).run()


@pytest.mark.parametrize("sensitivity", ["hessian", "loo"])
def test_hawq_allocation_meets_the_budget(tiny_config, sensitivity):
    config = tiny_config.replace(method="hawq", avg_bits=2.5, sensitivity=sensitivity)
    summary = Trainer(config).run()
    plan = summary["plan"]
    assert plan["method"] == sensitivity and plan["layers"] == ["fc1", "fc2", "fc3"]
    assert _bits(summary) == plan["bits"]
    assert summary["avg_bits"] <= 2.5 + 1e-9
    assert len(plan["costs"]) == 3 and len(plan["costs"][0]) == len(plan["candidates"])
    assert (plan["traces"] is not None) == (sensitivity == "hessian")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "hawq"}, "needs a bit budget"),
        ({"method": "hawq", "avg_bits": 0.5}, "needs a bit budget"),
        ({"method": "scheme"}, "needs bits per quantized layer"),
        ({"method": "scheme", "scheme": (8, 9)}, "each 0..8"),
        ({"method": "uniform", "first_last_bits": 12}, "first_last_bits must be at most 8"),
        ({"sensitivity": "fisher"}, "sensitivity must be one of: hessian, loo"),
        ({"method": "magic"}, "bsq, uniform, scheme, hawq"),
    ],
)
def test_method_settings_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**changes)


def test_scheme_survives_json():
    config = RunConfig(method="scheme", scheme=[8, 2, 8])
    assert RunConfig.from_dict(config.to_dict()) == config
    assert config.scheme == (8, 2, 8)


def test_method_descriptions():
    assert describe_method({"method": "bsq", "alpha": 0.04}) == "BSQ alpha=0.04"
    assert describe_method({"method": "scheme", "scheme": [8, 6, 2]}) == "scheme 8-6-2"
    assert describe_method({"method": "uniform", "uniform_bits": 4}) == "uniform 4-bit"


def test_a_wrecked_bsq_stage_warns_and_says_what_to_change():
    [warning] = stage_warnings(RunConfig(alpha=0.4, lr=0.05, requant_interval=10), 0.91, 0.40)
    assert "51.0 points lower" in warning
    assert "try alpha 0.2" in warning and "re-quantize less often" in warning


def test_sweep_repeats_every_point_over_seeds():
    runs = _sweep_configs(
        "mlp", "digits", [0.1], [2], {"max_train": 64}, first_last_bits=[2],
        hawq_avg_bits=[2.5], seeds=[0, 1],
    )  # fmt: skip
    names = [name for name, _ in runs]
    assert len(runs) == 8 and names[0] == "α=0.1, seed 0" and names[-1] == "HAWQ 2.5 bits, seed 1"
    assert {c.seed for _, c in runs} == {0, 1}
    assert {c.method for _, c in runs} == {"bsq", "uniform", "hawq"}
    assert all(c.max_train == 64 for _, c in runs)
    first_last = [c for name, c in runs if "first/last" in name]
    assert all(c.first_last_bits == 8 and c.uniform_bits == 2 for c in first_last)


# No --requant-interval: a BSQ-only flag is refused with --method hawq or scheme.
TINY_CLI = ["--pretrain-epochs", "1", "--epochs", "1", "--finetune-epochs", "1",
            "--max-train", "256", "--max-test", "128"]  # fmt: skip


def test_cli_trains_a_hawq_run_and_a_given_scheme(capsys):
    import json

    from bsq_engine.cli import main as cli

    code = cli.main(["train", "--method", "hawq", "--avg-bits", "2.5", *TINY_CLI, "--json"])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and summary["method"] == "hawq" and summary["avg_bits"] <= 2.5
    assert summary["method_label"] == "HAWQ-style (hessian) at 2.5 avg bits"
    code = cli.main(["train", "--method", "scheme", "--scheme", "8-2-8", *TINY_CLI])
    out = capsys.readouterr().out
    assert code == 0 and "scheme 8-2-8" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "scheme", "--scheme", "8,two,8"], "expected whole numbers of bits"),
        (["--method", "hawq"], "needs a bit budget"),
    ],
)
def test_cli_refuses_bad_method_settings_in_one_line(capsys, argv, message):
    from bsq_engine.cli import main as cli

    assert cli.main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_prints_stage_warnings_on_stderr(capsys):
    from bsq_engine.cli.format import print_outcome

    summary = {"run_id": "r1", "status": "finished", "model": "mlp", "dataset": "digits",
               "method_label": "BSQ alpha=0.4", "accuracy": 0.5, "float_accuracy": 0.97,
               "avg_bits": 1.0, "compression": 32.0, "seconds": 3.0,
               "warnings": ["Accuracy fell to 40.00% by the end of the BSQ stage"]}  # fmt: skip
    print_outcome(summary)
    out, err = capsys.readouterr()
    assert "finished run r1" in out and "warning: Accuracy fell to 40.00%" in err


@pytest.mark.slow
def test_cli_sweep_over_seeds_with_baselines(capsys):
    import json

    from bsq_engine.cli import main as cli

    argv = ["sweep", "--model", "mlp", "--dataset", "digits", "--uniform-bits", "2",
            "--first-last-uniform-bits", "2", "--hawq-avg-bits", "2.5", "--seeds", "0", "1",
            *TINY_CLI, "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "6 runs queued" in err  # --json: progress on stderr
    runs = json.loads(out.strip().splitlines()[-1])["runs"]
    labels = sorted((r["method_label"], r["alpha"]) for r in runs)
    assert labels.count(("uniform 2-bit, first/last 8-bit", None)) == 2
    assert all(r["status"] == "finished" for r in runs)
