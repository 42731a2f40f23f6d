"""Model registry by name (timm `_registry` style).

The dashboard fills its select boxes from `list_models()` and the tests parametrize over it, so
a model exists for the app exactly when it is registered here. Factories share one signature,
`fn(in_channels, num_classes, image_size, **kwargs) -> nn.Module`, so any model can be paired
with any dataset whose shape it accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = [
    "ModelInfo",
    "create_model",
    "get_model_info",
    "init_weights_",
    "list_models",
    "register_model",
]

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the app shows next to a model name before anything is built."""

    name: str
    description: str
    cost_hint: str  # e.g. "~10 s on a laptop CPU (digits)"
    datasets_hint: tuple[str, ...]  # datasets the model is sized for, best first


_MODELS: dict[str, tuple[ModelInfo, ModelFactory]] = {}


def register_model(
    name: str, *, description: str, cost_hint: str, datasets_hint: tuple[str, ...] | list[str]
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding `fn(in_channels, num_classes, image_size, **kwargs)` under `name`."""

    def decorator(fn: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"Model '{name}' is already registered; pick another name.")
        info = ModelInfo(name, description, cost_hint, tuple(datasets_hint))
        _MODELS[name] = (info, fn)
        return fn

    return decorator


def _lookup(name: str) -> tuple[ModelInfo, ModelFactory]:
    if name not in _MODELS:
        raise ValueError(f"Unknown model '{name}'. Available: {', '.join(_MODELS)}")
    return _MODELS[name]


def create_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int, **kwargs
) -> nn.Module:
    """Build a freshly initialised model (never downloads weights).

    Example: `create_model("resnet20", in_channels=3, num_classes=10, image_size=32)`.
    """
    _, factory = _lookup(name)
    for arg, value, low in (
        ("in_channels", in_channels, 1),
        ("num_classes", num_classes, 2),
        ("image_size", image_size, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {value!r}.")
    return factory(in_channels, num_classes, image_size, **kwargs)


def list_models() -> list[str]:
    """Registered names in registration order (stable for select boxes)."""
    return list(_MODELS)


def get_model_info(name: str) -> ModelInfo:
    return _lookup(name)[0]


def init_weights_(model: nn.Module) -> nn.Module:
    """He init for convs, unit BatchNorm, zero biases, so training from scratch converges.

    Linear weights keep PyTorch's default (kaiming-uniform), which trains these small heads
    well; only their biases are zeroed.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)
    return model
