"""Model registry: `create_model(name, in_channels=, num_classes=, image_size=)`.

Importing this package registers every built-in model (the module imports below exist for
that side effect); their order is the order `list_models()` reports, smallest models first.
"""

from . import small  # noqa: F401  (registers mlp, lenet5)

# isort: split
from . import dsnet  # noqa: F401  (registers dsnet)

# isort: split
from . import cifar_resnet  # noqa: F401  (registers resnet20/32/56)

# isort: split
from . import torchvision_models  # noqa: F401  (registers resnet18, mobilenet_v2)
from .registry import ModelInfo, create_model, get_model_info, list_models, register_model

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]
