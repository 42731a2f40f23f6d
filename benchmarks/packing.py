"""Export bit packing: ``np.packbits`` (core.packing) against the hand-written torch packer
of export format 1 (kept as the reference in ``tests/test_packing.py``), CPU seconds.

    python benchmarks/packing.py            # 1 M weights at 4 bits, 7 interleaved rounds
    python benchmarks/packing.py --json     # last line: one JSON object

Both packers run in ONE process, interleaved round by round (the order alternates), and
each call is timed in process CPU seconds (``time.process_time``), so machine load hits
both alike; medians are reported, with the ratio old / new. Every round also checks that
both produce the same bytes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsq_engine.core.packing import pack_bits, unpack_bits

_TESTS = Path(__file__).resolve().parents[1] / "tests" / "test_packing.py"


def _reference_packer():
    """``_old_pack_bits`` from the test module (one copy of the old code in the repo)."""
    spec = importlib.util.spec_from_file_location("_packing_reference", _TESTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._old_pack_bits


def _cpu_seconds(fn, *args) -> tuple[float, object]:
    start = time.process_time()
    out = fn(*args)
    return time.process_time() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=int, default=1 << 20)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    old_pack = _reference_packer()
    top = 2**args.bits - 1
    q = torch.randint(-top, top + 1, (args.weights,), generator=torch.Generator().manual_seed(0))
    times = {"old_pack": [], "new_pack": [], "new_unpack": []}
    for r in range(args.rounds):
        order = [("old_pack", old_pack), ("new_pack", pack_bits)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            seconds, packed = _cpu_seconds(fn, q, args.bits)
            times[name].append(seconds)
            if name == "new_pack":
                new_bytes = packed
            else:
                old_bytes = packed
        assert torch.equal(new_bytes, old_bytes), "packers disagree"
        seconds, values = _cpu_seconds(unpack_bits, new_bytes, args.bits, args.weights)
        assert torch.equal(values, q)
        times["new_unpack"].append(seconds)
    result = {k: statistics.median(v) for k, v in times.items()}
    result.update(weights=args.weights, bits=args.bits, rounds=args.rounds,
                  pack_speedup=result["old_pack"] / result["new_pack"])  # fmt: skip
    print(f"{args.weights} weights at {args.bits} bits, median CPU s over {args.rounds} rounds:")
    print(f"  old torch pack {result['old_pack']:.4f}   np.packbits {result['new_pack']:.4f}")
    print(f"  speed-up x{result['pack_speedup']:.1f};  np.unpackbits {result['new_unpack']:.4f}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
