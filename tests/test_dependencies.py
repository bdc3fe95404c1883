"""What pyproject.toml promises of the Pythons qlora-sweep installs on, read against the metadata of the
dependencies installed beside it."""

from importlib.metadata import metadata, requires

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

PYTHONS = [f"3.{minor}" for minor in range(8, 20)]


def _oldest(specifier: SpecifierSet) -> str:
    return next(python for python in PYTHONS if python in specifier)


@pytest.mark.unit
def test_no_dependency_needs_a_newer_python_than_qlora_sweep_says_it_runs_on():
    # pyproject said 3.10+ while trl 1.16 needs 3.11: pip on 3.10 then failed on trl's pin, not on ours
    ours = SpecifierSet(metadata("qlora-sweep")["Requires-Python"])
    needing_newer = {}
    for line in requires("qlora-sweep"):
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra's (test, liger)
        theirs = metadata(requirement.name).get("Requires-Python")
        if theirs and _oldest(ours) not in SpecifierSet(theirs):
            needing_newer[requirement.name] = theirs
    assert not needing_newer, f"qlora-sweep says {ours}, these need more: {needing_newer}"
