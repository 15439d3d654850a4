"""Which callers a canary serves: a hash of the caller, so every frontend and every request agree."""

from __future__ import annotations

from frontend.routing import canary_bucket

CALLERS = [f"key_{i:04x}" for i in range(10_000)]


def on_canary(percent: float, version: int = 2) -> set[str]:
    return {caller for caller in CALLERS if canary_bucket("flux-schnell", version, caller) < percent}


def test_a_canary_gets_its_share_of_callers() -> None:
    for percent in (1, 10, 25, 50):
        assert abs(len(on_canary(percent)) / len(CALLERS) * 100 - percent) < 1.5


def test_a_growing_canary_keeps_the_callers_it_had() -> None:
    assert on_canary(10) < on_canary(25) < on_canary(50)


def test_a_new_canary_version_deals_the_callers_afresh() -> None:
    overlap = len(on_canary(25, version=2) & on_canary(25, version=3)) / len(CALLERS) * 100
    assert 5 < overlap < 8  # independent draws: 25 % of 25 %
