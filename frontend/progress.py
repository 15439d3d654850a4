"""How far each generation has got, for the Studio's progress bar: steps done out of steps, told by
the pipeline itself rather than guessed by the page.

A client names its generation with a random `X-Progress-Id` header on the POST and polls
`GET /v1/images/progress/{id}` while it runs. Entries are keyed by (principal, id), so one caller
never reads another's, and live in this process only: like the rate limits, behind several replicas
a poll must reach the replica that runs the generation (sticky sessions). A finished entry is kept
for `KEEP_SECONDS`, so the page's last poll sees the end; then it is forgotten.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from frontend.errors import InvalidParameter

PROGRESS_HEADER = "X-Progress-Id"
PROGRESS_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
"""Long enough to be unguessable when random, short enough to bound what the board keeps."""
KEEP_SECONDS = 60.0


@dataclass
class Progress:
    """One generation's state. The route sets the stage; the pipeline counts the denoising steps."""

    stage: str = "queued"  # then "generating", "checking" (image safety), "encoding", and "done" or "failed"
    step: int = 0
    steps: int = 0
    denoised: int = 0
    """Steps this generation ran: fewer than `step` with an input image, whose schedule starts late."""

    def stepped(self, step: int, steps: int) -> None:
        self.step, self.steps = step, steps
        self.denoised += 1


class ProgressBoard:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Progress] = {}
        self._expiry: dict[tuple[str, str], float] = {}

    @contextlib.contextmanager
    def track(self, principal: str, progress_id: str | None) -> Iterator[Progress]:
        """A Progress for one generation, readable by `principal` under `progress_id` when one is given."""
        progress = Progress()
        if progress_id is None:
            yield progress
            return
        if not PROGRESS_ID.fullmatch(progress_id):
            raise InvalidParameter(
                f"`{PROGRESS_HEADER}` must be 8 to 64 letters, digits, `-` or `_`.", param=PROGRESS_HEADER
            )
        self._forget_expired()
        key = (principal, progress_id)
        self._entries[key] = progress
        self._expiry.pop(key, None)
        try:
            yield progress
            progress.stage = "done"
        except BaseException:
            progress.stage = "failed"
            raise
        finally:
            self._expiry[key] = time.monotonic() + KEEP_SECONDS

    def get(self, principal: str, progress_id: str) -> Progress | None:
        self._forget_expired()
        return self._entries.get((principal, progress_id))

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for key in [key for key, expires in self._expiry.items() if expires <= now]:
            del self._entries[key], self._expiry[key]
