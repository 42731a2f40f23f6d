"""RunConfig validation, serialization, schedules, and presets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bsq_engine.models import list_models
from bsq_engine.training.config import CONFIG_VERSION, RunConfig, Stage, stages_for
from bsq_engine.training.presets import PRESETS, list_presets, make_config, preset_for

# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("alpha", [-1e-3, float("nan"), float("inf")])
def test_bad_alpha_says_what_to_pass(alpha):
    with pytest.raises(ValueError, match="alpha must be >= 0") as info:
        RunConfig(alpha=alpha)
    assert "preset's value" in str(info.value)


def test_zero_alpha_is_allowed():
    assert RunConfig(alpha=0.0).alpha == 0.0


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match=r"model must be one of: .* \(got 'vgg99'\)") as info:
        RunConfig(model="vgg99")
    for name in list_models():
        assert name in str(info.value)


def test_unknown_dataset_and_method_are_rejected():
    with pytest.raises(ValueError, match=r"dataset must be one of: digits.* \(got 'imagenet'\)"):
        RunConfig(dataset="imagenet")
    with pytest.raises(
        ValueError, match=r"method must be one of: bsq, uniform, scheme, hawq \(got 'hawq-v9'\)"
    ):
        RunConfig(method="hawq-v9")


@pytest.mark.parametrize("method", ["bsq", "uniform"])
def test_zero_bsq_epochs_rejected(method):
    with pytest.raises(ValueError, match="bsq_epochs must be a number > 0, got 0"):
        RunConfig(method=method, bsq_epochs=0)


def test_zero_pretrain_and_finetune_epochs_allowed():
    config = RunConfig(pretrain_epochs=0, finetune_epochs=0)
    assert config.total_epochs == config.bsq_epochs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_milestones": (0.5, 1.2)}, r"lr_milestones must be LR milestones: .* \(0, 1\)"),
        ({"finetune_milestones": (0.0,)}, "finetune_milestones must be LR milestones"),
        ({"requant_interval": 0}, "requant_interval must be a number > 0"),
        ({"batch_size": 2.5}, "batch_size must be a whole number"),
        ({"lr": -0.1}, "lr must be a number > 0"),
        ({"momentum": -0.5}, "momentum must be a number >= 0"),
        ({"max_train": 0}, "max_train must be a number > 0"),
        ({"uniform_bits": 9, "method": "uniform"}, r"uniform_bits must be at most 8 \(max_bits\)"),
        ({"n_bits": 9}, "n_bits must be between 1 and max_bits"),
        ({"act_bits": 1}, "act_bits must be None"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda"),
        ({"pretrain_epochs": True}, "pretrain_epochs must be a whole number from 0 to 10000"),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().alpha = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------- serialization


def test_dict_round_trip_through_json():
    config = make_config("resnet20", "cifar10", alpha=7e-3, seed=3, max_train=100, name="x")
    data = json.loads(json.dumps(config.to_dict()))
    assert data["version"] == CONFIG_VERSION
    assert data["lr_milestones"] == [0.714]
    restored = RunConfig.from_dict(data)
    assert restored == config
    assert isinstance(restored.lr_milestones, tuple)


def test_unknown_keys_rejected():
    data = RunConfig().to_dict() | {"alpah": 0.1}
    with pytest.raises(ValueError, match=r"Unknown config keys \['alpah'\]. Valid keys"):
        RunConfig.from_dict(data)


def test_newer_version_rejected():
    data = RunConfig().to_dict() | {"version": CONFIG_VERSION + 1}
    with pytest.raises(ValueError, match="newer BSQ Explorer"):
        RunConfig.from_dict(data)


def test_missing_version_means_current():
    data = RunConfig(alpha=0.1).to_dict()
    del data["version"]
    assert RunConfig.from_dict(data) == RunConfig(alpha=0.1)


def test_from_dict_validates():
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        RunConfig.from_dict(RunConfig().to_dict() | {"alpha": -1})


# ---------------------------------------------------------------- schedules and stages


def test_lr_decays_after_each_milestone():
    config = RunConfig(bsq_epochs=10, lr=0.1, lr_milestones=(0.7,))
    lrs = [config.lr_at(Stage.BSQ, e) for e in range(1, 11)]
    assert lrs[:7] == [0.1] * 7
    assert lrs[7:] == pytest.approx([0.01] * 3)


def test_finetune_schedule_has_two_decays():
    config = RunConfig(finetune_epochs=12, finetune_lr=0.01, finetune_milestones=(0.5, 0.83))
    assert config.lr_at("finetune", 6) == pytest.approx(0.01)
    assert config.lr_at("finetune", 7) == pytest.approx(0.001)
    assert config.lr_at("finetune", 10) == pytest.approx(0.001)
    assert config.lr_at("finetune", 11) == pytest.approx(0.0001)


def test_pretrain_and_qat_use_their_own_base_lr():
    config = RunConfig(method="uniform", pretrain_lr=0.2, lr=0.03, pretrain_epochs=10)
    assert config.lr_at(Stage.PRETRAIN, 1) == 0.2
    assert config.lr_at(Stage.QAT, 1) == 0.03


def test_stages_per_method():
    assert stages_for("bsq") == [Stage.PRETRAIN, Stage.BSQ, Stage.FINETUNE]
    assert RunConfig(method="uniform").stages == [Stage.PRETRAIN, Stage.QAT, Stage.FINETUNE]
    config = RunConfig(pretrain_epochs=2, bsq_epochs=3, finetune_epochs=4)
    assert [config.epochs_of(s) for s in config.stages] == [2, 3, 4]
    assert config.total_epochs == 9
    assert Stage("done") is Stage.DONE and str(Stage.BSQ) == "bsq"


def test_bsq_config_follows_run_config():
    config = RunConfig(n_bits=6, max_bits=7, act_bits=4, float_shortcuts=True)
    bsq = config.bsq_config()
    assert (bsq.n_bits, bsq.max_bits, bsq.act_bits, bsq.float_shortcuts) == (6, 7, 4, True)


# ---------------------------------------------------------------- presets


def test_default_config_equals_default_preset():
    assert make_config() == RunConfig()


@pytest.mark.parametrize(("model", "dataset"), list(PRESETS))
def test_every_preset_is_a_valid_config(model, dataset):
    config = make_config(model, dataset)
    for key, value in preset_for(model, dataset).items():
        assert getattr(config, key) == value


def test_make_config_overrides_preset():
    config = make_config("resnet20", "cifar10", alpha=1e-2, bsq_epochs=5, act_bits=2)
    assert (config.alpha, config.bsq_epochs, config.act_bits) == (1e-2, 5, 2)
    assert config.requant_interval == 100  # untouched preset value
    assert config.float_shortcuts is True


def test_preset_falls_back_to_dataset_family():
    assert preset_for("resnet18", "cifar100")["act_bits"] == 4
    assert preset_for("mlp", "imagefolder")["alpha"] == 0.02
    assert {(p["model"], p["dataset"]) for p in list_presets()} == set(PRESETS)


def test_make_config_none_keeps_the_preset_and_replace_sets_float_activations():
    """None means "not given" (unset CLI flags pass through); replace() sets a real None."""
    assert make_config("resnet20", "cifar10", act_bits=None).act_bits == 4
    assert make_config("resnet20", "cifar10").replace(act_bits=None).act_bits is None


def test_dsnet_preset_is_the_measured_workload_with_headroom():
    """The settings of the 3-seed check in benchmarks/results/confirm_dsnet_*: changing
    them invalidates the README's claim, so they are pinned here."""
    config = make_config("dsnet", "fashion_mnist")
    assert (config.act_bits, config.max_train, config.requant_interval) == (4, 10000, 2)
    assert (config.pretrain_epochs, config.bsq_epochs, config.finetune_epochs) == (4, 8, 4)
