"""Our optional BSQ-stage changes (issue 12): capped MSB drops and fixed BatchNorm-followed
scales. Both are off by default, so the paper's method stays the default."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import pytest
import torch
from torch import nn

from bsq_engine.core.functional import int_to_planes, planes_to_int
from bsq_engine.core.quantize import prepare_bsq, quantized_layers, requantize_
from bsq_engine.models import create_model
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.config import ConfigError
from bsq_engine.training.presets import make_config
from bsq_engine.training.stage_options import bn_followed, freeze_bn_scales_
from bsq_engine.training.trainer import Trainer


def _layer_with_ints(signed: torch.Tensor, scale: float):
    model = prepare_bsq(nn.Sequential(OrderedDict(fc1=nn.Linear(4, 3, bias=False))))
    layer = model.fc1
    with torch.no_grad():
        layer.pos_planes.copy_(int_to_planes(signed.clamp(min=0), 8))
        layer.neg_planes.copy_(int_to_planes((-signed).clamp(min=0), 8))
        layer.scale.fill_(scale)
    return model, layer


@pytest.mark.parametrize(("cap", "dropped"), [(None, 5), (1, 1), (2, 2), (5, 5), (8, 5)])
def test_max_msb_drop_caps_dropped_planes_and_keeps_weights(cap, dropped):
    # Integers below 8: the 5 MSB planes (128 .. 16) are all zero.
    signed = torch.tensor([[7, -2, 0, 1], [-5, 4, 6, -7], [3, -1, 2, 0]])
    model, layer = _layer_with_ints(signed, 0.5)
    before = layer.effective_weight().detach().clone()
    events = requantize_(model, 8, max_msb_drop=cap)
    assert events[0].msb_dropped == dropped
    assert layer.n_bits == 8 - dropped
    assert torch.allclose(layer.effective_weight(), before, rtol=0, atol=1e-6)
    r = planes_to_int(layer.pos_planes.detach()) - planes_to_int(layer.neg_planes.detach())
    assert torch.equal(r, signed)  # no LSB was zero here: the integers are unchanged
    # The next re-quantization drops the next (at most ``cap``) zero MSBs.
    more = requantize_(model, 8, max_msb_drop=cap)
    assert layer.n_bits == max(8 - 2 * dropped, 3)
    assert bool(more) == (layer.n_bits < 8 - dropped)


def test_max_msb_drop_still_prunes_an_all_zero_layer():
    model, layer = _layer_with_ints(torch.zeros(3, 4, dtype=torch.long), 0.5)
    requantize_(model, 8, max_msb_drop=1)
    assert layer.pruned and layer.reported_bits == 0


def test_bn_followed_finds_layers_that_feed_a_batchnorm():
    mlp = prepare_bsq(create_model("mlp", in_channels=1, num_classes=10, image_size=8))
    assert bn_followed(mlp) == ["fc1", "fc2"]  # fc3 is the classifier
    lenet = prepare_bsq(create_model("lenet5", in_channels=1, num_classes=10, image_size=28))
    assert bn_followed(lenet) == ["conv1", "conv2", "fc1", "fc2"]
    plain = prepare_bsq(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    assert bn_followed(plain) == []
    # A BatchNorm of another width next to a layer is not its normalization.
    odd = prepare_bsq(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(5)))
    assert bn_followed(odd) == []


def test_freeze_bn_scales_only_touches_bn_followed_scales():
    model = prepare_bsq(create_model("mlp", in_channels=1, num_classes=10, image_size=8))
    assert freeze_bn_scales_(model, enabled=False) == []
    assert all(m.scale.requires_grad for _, m in quantized_layers(model))
    assert freeze_bn_scales_(model) == ["fc1", "fc2"]
    grads = {n: m.scale.requires_grad for n, m in quantized_layers(model)}
    assert grads == {"fc1": False, "fc2": False, "fc3": True}


class _Scales(Callback):
    def __init__(self):
        self.bsq: list[dict] = []

    def on_step_end(self, trainer, step):
        if step["stage"] == "bsq":
            layers = quantized_layers(trainer.model)
            self.bsq.append({n: float(m.scale.detach()) for n, m in layers})

    def on_requantize(self, trainer, events):
        self.bsq.append("requantized")


@pytest.mark.slow
@pytest.mark.parametrize("fixed", [False, True])
def test_fixed_bn_scales_only_change_at_requantization(fixed):
    """With the option, a BatchNorm-followed scale moves only when re-quantization folds
    an exact rescaling into it; without it (the paper) SGD moves it every step."""
    config = make_config(
        "mlp", "digits", pretrain_epochs=1, bsq_epochs=2, finetune_epochs=0,
        requant_interval=1, max_train=256, max_test=64, alpha=0.2, fixed_bn_scales=fixed,
    )  # fmt: skip
    scales = _Scales()
    Trainer(config, [scales]).run()
    steps = scales.bsq
    between = [(a, b) for a, b in itertools.pairwise(steps) if "requantized" not in (a, b)]
    assert between
    moved = {n for a, b in between for n in a if a[n] != b[n]}
    assert ("fc1" in moved and "fc2" in moved) is not fixed
    assert "fc3" in moved  # the classifier's scale is always trained


def test_options_are_validated_and_off_by_default():
    config = make_config("mlp", "digits")
    assert config.fixed_bn_scales is False and config.max_msb_drop is None
    with pytest.raises(ConfigError, match="max_msb_drop"):
        make_config("mlp", "digits", max_msb_drop=0)
    with pytest.raises(ConfigError, match="fixed_bn_scales"):
        make_config("mlp", "digits", fixed_bn_scales="yes")
    stored = make_config("mlp", "digits", max_msb_drop=2).to_dict()
    assert type(config).from_dict(stored).max_msb_drop == 2
    old = {k: v for k, v in stored.items() if k not in ("max_msb_drop", "fixed_bn_scales")}
    assert type(config).from_dict(old).max_msb_drop is None  # runs stored before the options


def test_cli_flags_set_the_options_and_are_refused_for_other_methods():
    from bsq_engine.cli.parser import build_parser
    from bsq_engine.cli.settings import config_from, overrides_of

    args = build_parser().parse_args(
        ["train", "--fixed-bn-scales", "--max-msb-drop", "2", "--alpha", "0.1"]
    )
    config = config_from("mlp", "digits", overrides_of(args))
    assert config.fixed_bn_scales is True and config.max_msb_drop == 2
    args = build_parser().parse_args(["train", "--method", "uniform", "--max-msb-drop", "2"])
    with pytest.raises(ValueError, match="max-msb-drop"):
        config_from("mlp", "digits", overrides_of(args))
