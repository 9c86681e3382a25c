"""Repository-level guarantees: lint clean, every setting documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from realty.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_setting_is_in_env_example() -> None:
    documented = set(
        re.findall(r"^#?\s*(REALTY_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    expected = {f"REALTY_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set()
    assert documented - expected - {"REALTY_DAGSTER_PG_URL"} == set()
