"""Model registry: every registered model builds, runs forward/backward, and is named right."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bsq_engine.models import create_model, get_model_info, list_models, register_model
from bsq_engine.models import registry as model_registry

_GREY_SHAPES = [(1, 8), (1, 28)]  # (in_channels, image_size) for the digit-sized models
_COLOUR_SHAPES = [(3, 32)]


def _shapes_for(name: str) -> list[tuple[int, int]]:
    hints = get_model_info(name).datasets_hint
    return _COLOUR_SHAPES if "cifar10" in hints else _GREY_SHAPES


_CASES = [(name, c, s) for name in list_models() for c, s in _shapes_for(name)]


def test_expected_models_registered_in_order():
    assert list_models() == [
        "mlp",
        "lenet5",
        "dsnet",
        "resnet20",
        "resnet32",
        "resnet56",
        "resnet18",
        "mobilenet_v2",
    ]


@pytest.mark.parametrize(("name", "in_channels", "image_size"), _CASES)
def test_forward_backward_finite(name, in_channels, image_size):
    torch.manual_seed(0)
    model = create_model(name, in_channels=in_channels, num_classes=7, image_size=image_size)
    model.train()
    x = torch.randn(2, in_channels, image_size, image_size)  # (2, C, H, W)
    logits = model(x)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 6])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", list_models())
def test_activations_are_modules(name):
    """Activation quantization swaps ReLU modules, so every model must have them as modules."""
    c, s = _shapes_for(name)[0]
    model = create_model(name, in_channels=c, num_classes=10, image_size=s)
    assert any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet20", "resnet32", "resnet56"])
def test_own_models_have_one_relu_instance_per_activation(name):
    c, s = _shapes_for(name)[0]
    model = create_model(name, in_channels=c, num_classes=10, image_size=s)
    calls: dict[int, int] = {}
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(
                lambda mod, i, o: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1)
            )
    model(torch.randn(2, c, s, s))
    assert calls and set(calls.values()) == {1}


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def test_resnet20_matches_paper():
    model = create_model("resnet20", in_channels=3, num_classes=10, image_size=32)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.26e6 < n_params < 0.28e6  # paper: 0.27M (option B shortcuts add ~2.7k)
    convs = _convs(model)
    shortcut = [n for n, _ in convs if "shortcut" in n or "downsample" in n]
    assert shortcut == ["layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert len(convs) - len(shortcut) == 19
    assert all(m.kernel_size == (1, 1) and m.stride == (2, 2) for n, m in convs if n in shortcut)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 64


@pytest.mark.parametrize(("name", "blocks"), [("resnet32", 5), ("resnet56", 9)])
def test_deeper_cifar_resnets_depth(name, blocks):
    model = create_model(name, in_channels=3, num_classes=100, image_size=32)
    main_convs = [n for n, _ in _convs(model) if "shortcut" not in n]
    assert len(main_convs) == 6 * blocks + 1  # depth 6n+2 minus the fc


def test_cifar_resnet_adapts_in_channels():
    model = create_model("resnet20", in_channels=1, num_classes=10, image_size=28)
    assert model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnet18_small_and_large_stems():
    small = create_model("resnet18", in_channels=1, num_classes=10, image_size=32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert small.conv1.in_channels == 1 and isinstance(small.maxpool, nn.Identity)
    large = create_model("resnet18", in_channels=1, num_classes=5, image_size=96)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)
    assert large(torch.randn(1, 1, 96, 96)).shape == (1, 5)
    assert any("downsample" in n for n, _ in _convs(small))


def test_mobilenet_v2_stem_and_head():
    model = create_model("mobilenet_v2", in_channels=1, num_classes=4, image_size=32)
    stem = model.features[0][0]
    assert stem.in_channels == 1 and stem.stride == (1, 1)
    assert model.classifier[-1].out_features == 4
    large = create_model("mobilenet_v2", in_channels=3, num_classes=4, image_size=128)
    assert large.features[0][0].stride == (2, 2)


@pytest.mark.parametrize("image_size", [8, 12, 28, 32])
def test_lenet5_any_image_size(image_size):
    model = create_model("lenet5", in_channels=1, num_classes=10, image_size=image_size)
    assert model(torch.randn(3, 1, image_size, image_size)).shape == (3, 10)


def test_dsnet_is_depthwise_separable():
    model = create_model("dsnet", in_channels=1, num_classes=10, image_size=28)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert list(convs) == ["conv1", "dw1", "pw1", "dw2", "pw2", "dw3", "pw3"]
    for i in (1, 2, 3):  # one 3x3 filter per channel, then a 1x1 mix
        dw, pw = convs[f"dw{i}"], convs[f"pw{i}"]
        assert dw.groups == dw.in_channels == dw.out_channels and dw.kernel_size == (3, 3)
        assert pw.kernel_size == (1, 1) and pw.out_channels == 2 * pw.in_channels
    assert model.fc.in_features == 128
    with pytest.raises(ValueError, match="image_size >= 4"):
        create_model("dsnet", in_channels=1, num_classes=10, image_size=3)


def test_lenet5_classic_sizes():
    assert (
        create_model("lenet5", in_channels=1, num_classes=10, image_size=28).fc1.in_features == 400
    )
    assert (
        create_model("lenet5", in_channels=3, num_classes=10, image_size=32).fc1.in_features == 400
    )
    with pytest.raises(ValueError, match="image_size >= 8"):
        create_model("lenet5", in_channels=1, num_classes=10, image_size=6)


def test_mlp_hidden_sizes():
    model = create_model("mlp", in_channels=1, num_classes=10, image_size=8, hidden=(32,))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 10)]
    default = create_model("mlp", in_channels=1, num_classes=10, image_size=28)
    assert [m.out_features for m in default.modules() if isinstance(m, nn.Linear)] == [256, 128, 10]


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match=r"Unknown model 'vgg'\. Available: mlp, lenet5"):
        create_model("vgg", in_channels=3, num_classes=10, image_size=32)
    with pytest.raises(ValueError, match="Unknown model"):
        get_model_info("vgg")


@pytest.mark.parametrize("bad", [{"in_channels": 0}, {"num_classes": 1}, {"image_size": 0}])
def test_create_model_validates_arguments(bad):
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 8} | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        create_model("mlp", **kwargs)


def test_model_info_is_frozen_and_descriptive():
    info = get_model_info("lenet5")
    assert info.name == "lenet5" and "digits" in info.datasets_hint
    assert info.description and info.cost_hint
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "other"  # type: ignore[misc]


def test_register_model_adds_and_rejects_duplicates(monkeypatch):
    monkeypatch.setattr(model_registry, "_MODELS", dict(model_registry._MODELS))

    @register_model("tiny", description="d", cost_hint="c", datasets_hint=["digits"])
    def tiny(in_channels, num_classes, image_size):
        return nn.Linear(in_channels, num_classes)

    assert list_models()[-1] == "tiny"
    assert get_model_info("tiny").datasets_hint == ("digits",)
    assert isinstance(create_model("tiny", in_channels=2, num_classes=3, image_size=1), nn.Linear)
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp", description="", cost_hint="", datasets_hint=())(tiny)


def test_convs_are_kaiming_initialised():
    torch.manual_seed(0)
    model = create_model("resnet56", in_channels=3, num_classes=10, image_size=32)
    conv = model.layer3[4].conv1  # fan_out = 64 * 3 * 3
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.005


@pytest.mark.slow  # trains for seconds
@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_small_models_learn_digits_from_scratch(name):
    """Init + data pipeline sanity: a few epochs on digits must beat chance by far."""
    from bsq_engine.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("digits")
    model = create_model(name, in_channels=1, num_classes=10, image_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        for xb, yb in data.train_loader(64, seed=0):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(data.test_x).argmax(1) == data.test_y).float().mean().item()
    assert accuracy > 0.85
