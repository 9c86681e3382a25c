"""The code location loads light: every run process and every code-server start imports it."""

from __future__ import annotations

import json
import subprocess
import sys

# What the bodies of assets, sensors and jobs import when they run (realty_assets/definitions.py)
HEAVY = ("mlflow", "sklearn", "catboost", "shap", "scipy", "matplotlib", "numba", "PIL")


def test_loading_the_code_location_imports_no_training_or_registry_library() -> None:
    probe = (
        "import json, sys; import realty_assets.definitions as d; "
        "d.defs.resolve_all_job_defs(); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
