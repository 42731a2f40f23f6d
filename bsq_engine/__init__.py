"""BSQ Explorer engine: bit-level sparsity quantization (Yang et al., ICLR 2021) in PyTorch.

Pure PyTorch and the standard library; never imports Streamlit. Start with
``prepare_bsq(model, BSQConfig())`` or run a whole pipeline with ``Trainer(make_config())``.
"""

from bsq_engine.core.functional import (
    from_bit_planes,
    plane_density,
    plane_group_norm,
    planes_to_value,
    quantize_unit,
    round_ste,
    to_bit_planes,
)
from bsq_engine.core.layers import ActQuant, BitConv2d, BitLinear, QuantConv2d, QuantLinear
from bsq_engine.core.quantize import (
    BSQConfig,
    PrecisionEvent,
    bit_report,
    prepare_bsq,
    prepare_uniform,
    requantize_,
    scheme_summary,
    to_fixed_,
)
from bsq_engine.core.regularizer import bit_group_lasso, clip_planes_
from bsq_engine.data import DatasetUnavailable, get_dataset_info, list_datasets, load_dataset
from bsq_engine.models import create_model, get_model_info, list_models
from bsq_engine.training.config import CONFIG_VERSION, RunConfig, Stage
from bsq_engine.training.presets import make_config, preset_for
from bsq_engine.training.trainer import DivergenceError, RunStopped, Trainer

__version__ = "0.1.0"

__all__ = [
    "CONFIG_VERSION",
    "ActQuant",
    "BSQConfig",
    "BitConv2d",
    "BitLinear",
    "DatasetUnavailable",
    "DivergenceError",
    "PrecisionEvent",
    "QuantConv2d",
    "QuantLinear",
    "RunConfig",
    "RunStopped",
    "Stage",
    "Trainer",
    "bit_group_lasso",
    "bit_report",
    "clip_planes_",
    "create_model",
    "from_bit_planes",
    "get_dataset_info",
    "get_model_info",
    "list_datasets",
    "list_models",
    "load_dataset",
    "make_config",
    "plane_density",
    "plane_group_norm",
    "planes_to_value",
    "prepare_bsq",
    "prepare_uniform",
    "preset_for",
    "quantize_unit",
    "requantize_",
    "round_ste",
    "scheme_summary",
    "to_bit_planes",
    "to_fixed_",
]
