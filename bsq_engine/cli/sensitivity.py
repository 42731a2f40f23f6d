"""``sensitivity RUN_ID``: the per-layer sensitivity of a run, measured once and then read
from its folder (``runs.sensitivity_cache``)."""

from __future__ import annotations

import sys

from bsq_engine.cli import format as fmt
from bsq_engine.runs.sensitivity_cache import sensitivity_of
from bsq_engine.runs.store import RunStore
from bsq_engine.training.sensitivity_report import agreement_sentence

__all__ = ["cmd_sensitivity"]


def _rows(result: dict) -> tuple[list[list], list[str]]:
    widths = [str(b) for b in result["bit_widths"]]
    bits = result["bits"] or [None] * len(result["layers"])
    rows = [[layer["name"], f"{layer['n_weights']:,}", "—" if b is None else str(b),
             f"{layer['trace']:.4g}", f"{layer['trace_per_weight']:.3g}",
             *(f"{layer['accuracy_drop_points'][w]:+.2f}" for w in widths),
             *(f"{layer['loss_increase'][w]:+.4f}" for w in widths)]
            for layer, b in zip(result["layers"], bits)]  # fmt: skip
    header = ["layer", "weights", "bits", "Tr(H)", "Tr(H)/N",
              *(f"acc drop {w}b" for w in widths), *(f"loss up {w}b" for w in widths)]  # fmt: skip
    return rows, header


def cmd_sensitivity(args) -> int:
    with RunStore() as store:
        result = sensitivity_of(store, args.run_id, recompute=args.recompute)
    sentence = agreement_sentence(result["layers"], result["bits"], result["bits_whose"])
    if result.get("note"):
        print(f"note: {result['note']}", file=sys.stderr)
    if args.json:
        fmt.emit_json({**result, "agreement": sentence})
        return 0
    base = result["base"]
    print(f"run {result['run_id']}: per-layer sensitivity of {result['source_note']}.")
    print(f"  float model on {result['test_images']} test images: accuracy "
          f"{fmt.pct(base['accuracy'])}, loss {base['loss']:.4f}; measured in "
          f"{result['seconds']:.1f} s on {result['device']}")  # fmt: skip
    print(fmt.table(*_rows(result), "  "))
    print(f"Tr(H): Hutchinson estimate ({result['hutchinson_samples']} samples x "
          f"{result['train_images']} training images); acc drop / loss up: only that layer "
          "quantized to b bits, in points / nats.")  # fmt: skip
    print(sentence)
    return 0
