"""``python -m bsq_engine reproduce``: the paper's recipe on a tiny fake CIFAR-10 folder."""

from __future__ import annotations

import json

import pytest
from test_data import write_cifar

from bsq_engine.cli import main as cli
from bsq_engine.cli.reproduce import paper_figures
from bsq_engine.runs.store import RunStore

TINY = ["--pretrain-epochs", "1", "--epochs", "1", "--finetune-epochs", "2",
        "--requant-interval", "1", "--batch-size", "8", "--device", "cpu"]  # fmt: skip


def test_paper_figures_come_from_the_reference_file():
    figures = paper_figures("resnet20", "cifar10")
    assert figures["bsq"]["compression"] == "14.24" and figures["float"]["accuracy"] == "92.5"


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["last", "best"])
def test_reproduce_prints_paper_next_to_run(tmp_path, capsys, rule, bsq_home):
    write_cifar(tmp_path, "cifar10")
    argv = ["reproduce", "resnet20-cifar10", "--data-root", str(tmp_path), *TINY,
            "--report", rule, "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "the paper's recipe was changed" in err  # tiny schedule: not a reproduction
    lines = out.strip().splitlines()
    report = json.loads(lines[-1])
    table = "\n".join(lines)
    assert "compression (x)" in table and "14.24" in table and "92.50" in table
    assert f"accuracy, {rule} epoch (%)" in table and "<- reported" in table
    run_id = report["run_id"]
    finetune = [e["test_acc"] for e in RunStore(bsq_home).epochs(run_id)
                if e["stage"] == "finetune"]  # fmt: skip
    assert report["best_epoch_accuracy"] == max(finetune)
    assert report["last_epoch_accuracy"] == RunStore(bsq_home).get_run(run_id)["accuracy"]
    assert report["accuracy"] == report[f"{rule}_epoch_accuracy"]


def test_unknown_recipe_is_one_line(capsys):
    assert cli.main(["reproduce", "vgg-imagenet"]) == 2
    assert "choose one of: resnet20-cifar10" in capsys.readouterr().err
