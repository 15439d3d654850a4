"""The README documents the API's errors: its table is checked against the error classes and their HTTP answers."""

from __future__ import annotations

import re
from pathlib import Path

from frontend import errors
from frontend.api.errors import HTTP_ANSWERS

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| `(?P<code>[A-Z]+_\d+)` \| (?P<status>\d{3}) \| .+ \|$", re.MULTILINE)


def error_classes() -> list[type[errors.APIError]]:
    found, pending = [], [errors.APIError]
    while pending:
        subclasses = pending.pop().__subclasses__()
        found += subclasses
        pending += subclasses
    return found


def test_readme_error_table_lists_every_error_code_with_its_status() -> None:
    section = README.read_text().split("### Errors", 1)[1].split("\n#", 1)[0]
    documented = [(match["code"], int(match["status"])) for match in ROW.finditer(section)]
    assert len(documented) == len(set(documented)), "a code is documented twice"
    assert sorted(documented) == sorted((cls.code, HTTP_ANSWERS[cls].status) for cls in error_classes())
