"""The progress board: a caller reads only its own generations, and learns how each one ended."""

from __future__ import annotations

import pytest

from frontend.errors import InvalidParameter
from frontend.progress import ProgressBoard

ID = "0123456789abcdef"


def test_a_generation_is_readable_by_its_caller_only() -> None:
    board = ProgressBoard()
    with board.track("key_a", ID) as progress:
        progress.stepped(2, 4)
        assert board.get("key_a", ID) == progress
        assert board.get("key_b", ID) is None
    assert (progress.stage, progress.step, progress.steps) == ("done", 2, 4)


def test_a_failed_generation_reads_failed() -> None:
    board = ProgressBoard()
    with pytest.raises(RuntimeError), board.track("key_a", ID):
        raise RuntimeError("Triton went away")
    assert board.get("key_a", ID).stage == "failed"


@pytest.mark.parametrize("progress_id", ["short", "x" * 65, "../../etc"])
def test_an_id_out_of_its_alphabet_or_length_is_refused(progress_id: str) -> None:
    with pytest.raises(InvalidParameter), ProgressBoard().track("key_a", progress_id):
        pass
