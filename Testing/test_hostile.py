"""The hostile-input suite (hostile.py) through the command line, each case capped in a subprocess.

Every case must give its promised outcome: a typed one-line error (exit 1; exit 2 for a refused
argument) and nothing written, or success with the exact voxels. CI runs the first case of every
class; the whole corpus runs with the ``slow`` marker (``pytest -m slow Testing/test_hostile.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import HostileCase, hostile_cases, run_case

CASES = hostile_cases()
REPRESENTATIVE = {next(c.name for c in CASES if c.group == group) for group in dict.fromkeys(c.group for c in CASES)}


def _params() -> list:
    return [
        pytest.param(
            case, id=case.name, marks=() if case.name in REPRESENTATIVE and not case.slow else pytest.mark.slow
        )
        for case in CASES
    ]


@pytest.mark.parametrize("case", _params())
def test_hostile_input_gives_the_promised_outcome(case: HostileCase, tmp_path: Path) -> None:
    result, problems = run_case(case, tmp_path / case.name)
    assert not problems, f"{case.name}: {'; '.join(problems)}"


def test_every_class_of_issue_13_has_cases() -> None:
    groups = {case.group for case in CASES}
    expected = {"duplicates", "temporaries", "pixel-attributes", "grids", "devices", "arguments", "nesting",
                "code-vr", "unknown-keys", "unbounded", "paths", "numbers", "sizes", "reference", "faults"}  # fmt: skip
    assert expected <= groups, expected - groups
    assert len(CASES) >= 40
