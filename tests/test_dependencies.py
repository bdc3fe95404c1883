"""What pyproject.toml promises of the Pythons qlora-sweep installs on, read against the metadata of the
dependencies installed beside it."""

from importlib.metadata import metadata, requires

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

PYTHONS = [f"3.{minor}" for minor in range(8, 20)]


def _installed_requirements(name: str) -> list[Requirement]:
    """`name`'s own requirements, without its extras'."""
    found = [Requirement(line) for line in requires(name) or []]
    return [r for r in found if r.marker is None or r.marker.evaluate({"extra": ""})]


def _oldest(specifier: SpecifierSet) -> str:
    return next(python for python in PYTHONS if python in specifier)


@pytest.mark.unit
def test_no_dependency_needs_a_newer_python_than_qlora_sweep_says_it_runs_on():
    # pyproject said 3.10+ while trl 1.16 needs 3.11: pip on 3.10 then failed on trl's pin, not on ours
    ours = SpecifierSet(metadata("qlora-sweep")["Requires-Python"])
    needing_newer = {}
    for requirement in _installed_requirements("qlora-sweep"):  # not an extra's (test, liger)
        theirs = metadata(requirement.name).get("Requires-Python")
        if theirs and _oldest(ours) not in SpecifierSet(theirs):
            needing_newer[requirement.name] = theirs
    assert not needing_newer, f"qlora-sweep says {ours}, these need more: {needing_newer}"


@pytest.mark.unit
def test_the_torch_floor_is_one_that_every_dependency_accepts():
    # The README's promise: install the torch build that fits the machine first, and pip keeps it. pyproject said
    # torch>=2.4 while accelerate needs 2.6: pip would have replaced a torch 2.4 or 2.5, CUDA build and all.
    # (Other floors below a dependency's only let pip pick a newer version; torch's replaces the user's build.)
    ours = _installed_requirements("qlora-sweep")
    (torch,) = [r for r in ours if canonicalize_name(r.name) == "torch"]
    floors = [spec.version for spec in torch.specifier if spec.operator in (">=", "==")]
    wanted = {dependency.name: theirs.specifier for dependency in ours
              for theirs in _installed_requirements(dependency.name) if canonicalize_name(theirs.name) == "torch"}
    below = [(floor, name, str(specifier)) for name, specifier in wanted.items() for floor in floors
             if floor not in specifier]
    assert not below, below
