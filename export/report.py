"""What `imagegen export` tells its user: a progress bar per component and a closing table of what
each component cost (parameters, file size, peak memory, time).

Peak memory is the process's resident high-water mark (`VmHWM`), reset before each component through
`/proc/self/clear_refs` (Linux), so each row is that component's own peak, the weights it loaded
included. Where the reset is not allowed, the row holds the process's peak so far, marked `>=`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

STAGES = ("load", "export", "check")
"""A component's export: its weights loaded, traced and written as ONNX, the ONNX run against torch."""


@dataclass
class ComponentReport:
    """One row of the closing table."""

    name: str
    dtype: str
    parameters: int = 0
    file_bytes: int = 0
    peak_rss_bytes: int = 0
    peak_is_own: bool = True
    """False where the high-water mark could not be reset: the process's peak so far."""
    seconds: float = 0.0
    max_error: float = 0.0
    """max |torch - ONNX Runtime| on the sample inputs, in the export dtype."""
    files: list[Path] = field(default_factory=list)


def reset_peak_rss() -> bool:
    """Start a new resident high-water mark for this process; False where Linux does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """The process's resident high-water mark since the last reset (`VmHWM` in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def measured(report: ComponentReport) -> Iterator[tqdm]:
    """Fill `report`'s time and peak memory around the block, which advances the yielded progress bar
    one stage at a time (`STAGES`). The bar shows on a terminal only (tqdm's `disable=None`)."""
    report.peak_is_own = reset_peak_rss()
    started = time.perf_counter()
    with tqdm(total=len(STAGES), desc=report.name, unit="stage", disable=None, leave=True) as bar:
        yield bar
    report.seconds = time.perf_counter() - started
    report.peak_rss_bytes = peak_rss_bytes()
    report.file_bytes = sum(path.stat().st_size for path in report.files if path.is_file())


def summary_table(reports: list[ComponentReport]) -> str:
    """The closing table, one row per component, in export order."""
    header = ("component", "dtype", "parameters", "file size", "peak RSS", "seconds", "max |torch-onnx|")
    rows = [
        (
            report.name,
            report.dtype,
            f"{report.parameters:,}",
            _size(report.file_bytes),
            ("" if report.peak_is_own else ">=") + _size(report.peak_rss_bytes),
            f"{report.seconds:.1f}",
            f"{report.max_error:.1e}",
        )
        for report in reports
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def _size(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
