"""Warnings a finished run carries: what went wrong in a stage, and what to change.

The accuracy at the end of the BSQ stage is the one number that says whether alpha suited
the schedule: when re-quantization wrecks the model there (a large first MSB drop, a layer
pruned too early), a short finetune at a low learning rate rarely repairs it, and the final
accuracy alone would hide why.
"""

from __future__ import annotations

from bsq_engine.core.cost import bops, layer_macs
from bsq_engine.core.quantize import scheme_summary
from bsq_engine.training.config import RunConfig

__all__ = ["STAGE_DROP_WARN", "bench_facts", "stage_warnings"]

# Points of accuracy lost by the end of the BSQ stage (vs float) that earn a warning. Our
# choice: the audit saw healthy runs lose 0-3 points there and wrecked ones 10-60.
STAGE_DROP_WARN = 5.0


def stage_warnings(
    config: RunConfig, float_accuracy: float | None, stage_accuracy: float | None
) -> list[str]:
    """Human warnings for a run's summary (empty when nothing looks wrong).

    >>> from bsq_engine.training.config import RunConfig
    >>> stage_warnings(RunConfig(alpha=0.3), 0.975, 0.60)[0][:64]
    'Accuracy fell to 60.00% by the end of the BSQ stage (float 97.50'
    >>> stage_warnings(RunConfig(), 0.975, 0.95)
    []
    """
    if float_accuracy is None or stage_accuracy is None:
        return []
    drop = 100.0 * (float_accuracy - stage_accuracy)
    if drop <= STAGE_DROP_WARN:
        return []
    stage = "BSQ" if config.method == "bsq" else "QAT"
    message = (
        f"Accuracy fell to {100 * stage_accuracy:.2f}% by the end of the {stage} stage (float "
        f"{100 * float_accuracy:.2f}%, {drop:.1f} points lower); the finetune may not repair it."
    )
    if config.method == "bsq":
        message += (
            f" alpha {config.alpha:g} is too strong for lr {config.lr:g} and re-quantization "
            f"every {config.requant_interval} epochs: try alpha {config.alpha / 2:g}, a lower "
            "lr, or re-quantize less often (compression follows lr x alpha and the interval)."
        )
    else:
        message += " The scheme has too few bits for this model: raise the bits or the budget."
    return [message]


def bench_facts(trainer) -> dict:
    """Summary fields of a finished ``Trainer`` that the honest bench needs: test-set size
    and classes (intervals, collapse), BOPs, the accuracy before finetuning, the plan of a
    fixed-scheme method and the warnings."""
    cfg, info, model = trainer.config, trainer.data.info, trainer.model
    example = next(iter(trainer.data.test_loader(1, device=trainer.device)))[0]
    bits = {layer["name"]: layer["n_bits"] for layer in scheme_summary(model)["layers"]}
    stage_acc = trainer.quant_stage_accuracy
    return {
        "test_size": len(trainer.data.test_y), "num_classes": info.num_classes,
        "act_bits": cfg.act_bits, "bops": bops(layer_macs(model, example), bits, cfg.act_bits),
        "quant_stage_accuracy": stage_acc,
        "first_last_bits": cfg.first_last_bits if cfg.method == "uniform" else None,
        "plan": trainer.plan,
        "warnings": stage_warnings(cfg, trainer.float_accuracy, stage_acc),
    }  # fmt: skip
