"""The realty modules a logged price model needs, shipped with it as MLflow ``code_paths``.

A pickled ``PriceModel`` refers to its classes by module name (``realty.model.price_model``,
``.features``, ``.training``). ``price_model_code`` copies those modules and every realty module
they import, and nothing else, into a ``realty/`` tree that ``log_model(code_paths=...)`` stores
under the model's ``code/``. MLflow puts ``code/`` on ``sys.path`` when it loads the model, so an
environment with only the model's requirements (``mlflow models serve`` elsewhere) imports
them from there. A process that has already imported ``realty`` (serving, training, scoring)
keeps using its installed copy: Python resolves submodules through the imported package's
``__path__``, so the shipped copy is never imported there and the hot path does not change.

The modules are found from the import statements in their source rather than listed by hand,
so a new module the model starts to import travels with it without anyone editing a list.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import realty

PACKAGE = "realty"
# The modules whose classes a pickled PriceModel holds (PriceModel, FeatureConfig,
# LocationEncoder, MedianPriceBaseline); their imports bring the rest.
MODEL_MODULES = ("realty.model.price_model", "realty.model.training")


def imported_modules(module: str) -> set[str]:
    """The realty modules ``module``'s source imports (anywhere in the file, lazily too)."""
    tree = ast.parse(Path(_origin(module)).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from realty.model import registry`` imports a module, ``from x import name`` not.
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if _is_realty_module(name)}


def module_closure(roots: Iterable[str] = MODEL_MODULES) -> set[str]:
    """``roots``, every realty module they import, transitively, and the packages holding them."""
    found: set[str] = set()
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in found:
            continue
        found.add(module)
        parents = [module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)]
        pending.extend(parents)
        pending.extend(imported_modules(module))
    return found


@contextmanager
def price_model_code() -> Iterator[list[str]]:
    """``code_paths`` for ``log_model``: a temporary ``realty/`` tree of ``module_closure()``."""
    source_root = Path(realty.__file__).parent.parent
    with tempfile.TemporaryDirectory(prefix="realty-model-code-") as staging:
        for module in sorted(module_closure()):
            source = Path(_origin(module))
            target = Path(staging) / source.relative_to(source_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        yield [str(Path(staging) / PACKAGE)]


def _is_realty_module(name: str) -> bool:
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # ``realty.model.features.FEATURE_COLUMNS``: a name, not a module
        return False


def _origin(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{module} has no source file to ship with the model")
    return spec.origin
