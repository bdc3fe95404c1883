"""The structure the code keeps, checked on its source.

- trainables/ (one trial) never imports search/ (the driver): the driver uses the trial, never the
  reverse.
- Ray is imported by three modules only: search/tuner.py (Tune's setup and restore, the cluster),
  search/results.py (reading an experiment folder) and trainables/report.py (a trial's reports and
  checkpoints).
- Imports sit at the top of a module. The exceptions, written here once and enforced here:
  1. The heavy libraries (HEAVY below), and our modules that import them at their top, are imported
     inside the functions that need them wherever the driver may run that code: the driver must
     never load them (it would touch CUDA, and take seconds to start).
  2. search/cli.py imports each command's modules inside the command, so that `--help` and a bad
     config answer before Ray, datasets or a model library load.
  3. search/tuner.py imports Ray internals (an underscore name) after checking Ray's version.
"""

import ast
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

HEAVY = {"torch", "transformers", "peft", "bitsandbytes", "trl"}
RAY_DOORS = {"search/tuner.py", "search/results.py", "trainables/report.py"}
SOURCES = sorted(p.relative_to(ROOT).as_posix() for package in ("search", "trainables")
                 for p in (ROOT / package).glob("*.py"))


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


def _imports(path: str) -> list[tuple[str, str, int, bool]]:
    """(module, first imported name, line, at the top) for every import in the file."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    top_level |= {id(child) for node in tree.body if isinstance(node, ast.If) for child in node.body}  # TYPE_CHECKING
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.names[0].name, node.lineno, id(node) in top_level))
    return found


def _heavy_modules() -> set[str]:
    """Our modules that load a heavy library when imported, directly or through another of ours."""
    tops = {_module(p): {m for m, _, _, top in _imports(p) if top} for p in SOURCES}
    heavy = {name for name, imported in tops.items() if {m.split(".")[0] for m in imported} & HEAVY}
    while True:
        more = {name for name, imported in tops.items() if name not in heavy and imported & heavy}
        if not more:
            return heavy
        heavy |= more


def test_the_trial_never_imports_the_driver():
    backwards = [f"{path}:{line} imports {module}" for path in SOURCES if path.startswith("trainables/")
                 for module, _, line, _ in _imports(path) if module.split(".")[0] == "search"]
    assert not backwards, backwards


def test_ray_is_imported_by_three_modules_only():
    doors = {path for path in SOURCES for module, _, _, _ in _imports(path) if module.split(".")[0] == "ray"}
    assert doors == RAY_DOORS


def test_imports_inside_functions_are_only_the_written_exceptions():
    heavy = _heavy_modules()
    assert {"trainables.model", "trainables.trial", "trainables.report"} <= heavy  # the check can see them
    assert not heavy & {_module(p) for p in SOURCES if p.startswith("search/")}
    misplaced = []
    for path in SOURCES:
        for module, name, line, top in _imports(path):
            if top or module == "__future__":
                continue
            allowed = (module.split(".")[0] in HEAVY or module in heavy or path == "search/cli.py"
                       or (path == "search/tuner.py" and (name.startswith("_") or "._" in module)))
            if not allowed:
                misplaced.append(f"{path}:{line} imports {module} inside a function")
    assert not misplaced, misplaced


def test_loading_the_driver_loads_no_heavy_library():
    heavy = _heavy_modules()  # once: it parses every source file
    light = [_module(p) for p in SOURCES if _module(p) not in heavy and not p.endswith("__main__.py")]
    code = (f"import sys; import {', '.join(light)}; "
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    assert "search.cli" in light and "search.tuner" in light and "trainables.memory" in light
