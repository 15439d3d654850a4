"""The simulated GPU's cost model: what one call of a component takes, by batch size, read from a
cost file (benchmarks/h200_costs.json: per component, measured calls with the source of each figure).

`imagegen export --simulate` writes each component's times for every batch size it takes beside its
model (export/simulate.py), where the simulated backend (backends/simulated) reads them, and `make
bench-gpu-sim` (benchmarks/gpu_sim.py) prices what Triton ran with the same tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Timing = Literal["graph", "eager"]
"""Which measurement a call costs: replayed as one CUDA graph (the GPU's own time, what a TensorRT
plan in Triton starts from) or PyTorch eager (Python launching every kernel)."""


@dataclass(frozen=True)
class ComponentCost:
    """One component's measured calls, (batch, milliseconds) in increasing batch order."""

    name: str
    measured: tuple[tuple[int, float], ...]

    def ms(self, batch: int) -> float:
        """One call of `batch` samples: linear between measured batches, per sample at the largest
        measured batch's rate past it (a GPU saturated there gains nothing from more)."""
        if batch < 1:
            raise ValueError(f"a call has at least one sample, not {batch}")
        smaller = [point for point in self.measured if point[0] <= batch]
        larger = [point for point in self.measured if point[0] >= batch]
        if not larger:
            last_batch, last_ms = self.measured[-1]
            return last_ms * batch / last_batch
        if not smaller:  # below the smallest measured batch: that call's time (a GPU call has a floor)
            return larger[0][1]
        (low, low_ms), (high, high_ms) = smaller[-1], larger[0]
        if high == low:
            return low_ms
        return low_ms + (high_ms - low_ms) * (batch - low) / (high - low)

    def ms_by_batch(self, max_batch: int) -> list[float]:
        """`ms(b)` for b = 1 .. max_batch, what a model's simulated backend looks up."""
        return [round(self.ms(batch), 3) for batch in range(1, max_batch + 1)]


def load_costs(path: Path, timing: Timing = "graph") -> dict[str, ComponentCost]:
    """Component name -> its cost, from `path`'s `timing` figures (eager where a call has no graph figure)."""
    document = json.loads(path.read_text())
    costs = {}
    for name, entry in document["components"].items():
        calls = sorted(entry["calls"], key=lambda call: call["batch"])
        measured = tuple((int(call["batch"]), float(call.get(f"{timing}_ms") or call["eager_ms"])) for call in calls)
        costs[name] = ComponentCost(name, measured)
    return costs
