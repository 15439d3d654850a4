"""Which steps a stream's previews are decoded after (pipelines/previews.py)."""

from __future__ import annotations

import pytest

from frontend.pipelines.previews import preview_steps


@pytest.mark.parametrize(
    ("start", "end", "count", "expected"),
    [
        (0, 4, 1, {1}),
        (0, 4, 2, {1, 2}),
        (0, 4, 3, {0, 1, 2}),
        (0, 28, 2, {9, 18}),
        (0, 30, 3, {7, 14, 22}),
        (6, 10, 2, {7, 8}),  # img2img: only the steps run count
        (0, 1, 2, {0}),  # one step: its estimate is the only preview there is
        (0, 2, 3, {0, 1}),
        (0, 4, 0, set()),
    ],
)
def test_previews_split_the_steps_run_evenly(start: int, end: int, count: int, expected: set[int]) -> None:
    assert preview_steps(start, end, count) == expected


@pytest.mark.parametrize("steps", range(1, 12))
@pytest.mark.parametrize("count", range(1, 4))
def test_one_preview_per_step_at_most_and_none_at_the_last_while_steps_are_left(steps: int, count: int) -> None:
    chosen = preview_steps(0, steps, count)
    assert len(chosen) == min(count, steps)
    assert chosen <= set(range(steps))
    if steps > count:
        assert steps - 1 not in chosen
