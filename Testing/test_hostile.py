"""The hostile-input suite (hostile.py) through the command line, each case capped in a subprocess.

Every case must give its promised outcome: a typed one-line error (exit 1; exit 2 for a refused
argument) and nothing written, or success with the exact voxels. CI runs the first case of every
class; the whole corpus runs with the ``slow`` marker (``pytest -m slow Testing/test_hostile.py``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hostile import HERE, HostileCase, capped_environment, hostile_cases, limits, run_case

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


# ---------------------------------------------------------------- the format fuzz targets, a short slice


def _mutations(seed: bytes, count: int, rng: random.Random) -> list[bytes]:
    """Byte flips, truncations, duplicated and inserted runs, and header-field edits of ``seed``."""
    out = []
    for _ in range(count):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            at = rng.randrange(max(len(data), 1))
            if kind < 0.4 and data:
                data[at] = rng.randrange(256)
            elif kind < 0.55:
                del data[at:]
            elif kind < 0.75:
                data[at:at] = data[at : at + rng.randint(1, 64)] * rng.randint(1, 8)
            else:
                data[at:at] = rng.choice([b"nan", b"-1", b"99999999999", b"\n\n", b"[[[[", b"\x00", b": ", b"1e400"])
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("target", ["nrrd", "nifti", "labeltable"])
def test_format_fuzz_targets_short(target: str, tmp_path: Path) -> None:
    """A few hundred mutated NRRD / NIfTI / label-table inputs: a read or a clear LabelmapSegError each.

    Checked in one subprocess under an address-space limit and a time bound (``make fuzz`` runs the
    coverage-guided version of the same target with atheris).
    """
    from fuzz_formats import write_seeds

    rng = random.Random(f"{target}-13")
    inputs = []
    for seed in write_seeds(target, tmp_path / "seeds"):
        for index, data in enumerate(_mutations(seed.read_bytes(), 150, rng)):
            path = tmp_path / "inputs" / f"{seed.name}.{index}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            inputs.append(str(path))
    process = subprocess.run(
        [sys.executable, str(HERE / "fuzz_formats.py"), "--check", target, *inputs],
        capture_output=True,
        text=True,
        timeout=300,
        env=capped_environment(),
        preexec_fn=limits(),
    )
    findings = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    assert process.returncode in (0, 1), process.stderr[-2000:]
    assert not findings, "\n".join(f"{f['input']}: {f['error']}" for f in findings[:10])
