"""benchmarks/hold_results.sh: the results folders a GPU job does not read leave the tree for the staging calls,
and come back whole; bad input moves nothing."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

KEPT = ("2026-12-04-sweep-500", "2026-12-02-trial-speed-defaults")


def _project(tmp_path: Path) -> Path:
    """A copy of the script in a project of four results folders, each holding a file."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "hold_results.sh", tmp_path / "benchmarks")
    for name in (*KEPT, "2026-12-06-loraplus", "2026-12-07-loraplus"):
        folder = tmp_path / "benchmarks" / "results" / name
        (folder / "seed0").mkdir(parents=True)
        (folder / "seed0" / "summary.json").write_text(name)
    return tmp_path


def _hold(project: Path, *words: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(project / "benchmarks" / "hold_results.sh"), *words],
                          capture_output=True, text=True, timeout=60)


def _results(project: Path) -> dict[str, str]:
    return {path.relative_to(project).as_posix(): path.read_text()
            for path in sorted(project.glob("benchmarks/results/*/seed0/summary.json"))}


def test_out_keeps_only_what_gpu_jobs_read_and_back_restores_every_folder(tmp_path):
    project = _project(tmp_path)
    before = _results(project)

    held = _hold(project, "out")
    assert held.returncode == 0, held.stderr
    assert sorted(p.name for p in (project / "benchmarks" / "results").iterdir()) == sorted(KEPT)
    assert sorted(p.name for p in (project / ".devstage" / "held").iterdir()) == [
        "2026-12-06-loraplus", "2026-12-07-loraplus"]
    assert "held 2 results folders" in held.stdout

    back = _hold(project, "back")
    assert back.returncode == 0, back.stderr
    assert _results(project) == before
    assert not (project / ".devstage" / "held").exists()


def test_named_folders_are_kept_instead_of_the_default_ones(tmp_path):
    project = _project(tmp_path)
    assert _hold(project, "out", "2026-12-07-loraplus").returncode == 0
    assert [p.name for p in (project / "benchmarks" / "results").iterdir()] == ["2026-12-07-loraplus"]


def test_with_every_folder_kept_nothing_is_held_and_back_still_ends_the_hold(tmp_path):
    project = _project(tmp_path)
    before = _results(project)
    assert "held 0 results folders" in _hold(project, "out", *KEPT, "2026-12-06-loraplus",
                                             "2026-12-07-loraplus").stdout
    back = _hold(project, "back")
    assert back.returncode == 0 and "put 0 results folders back" in back.stdout, back.stderr
    assert _results(project) == before and not (project / ".devstage" / "held").exists()


@pytest.mark.parametrize("words, says", [
    (("out", "2026-12-08-nothing"), "no results folder benchmarks/results/2026-12-08-nothing to keep"),
    (("back",), "nothing is held"),
    (("sideways",), "usage:"),
    ((), "usage:"),
])
def test_bad_input_exits_2_with_one_line_and_moves_nothing(tmp_path, words, says):
    project = _project(tmp_path)
    before = _results(project)
    done = _hold(project, *words)
    assert done.returncode == 2
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert _results(project) == before and not (project / ".devstage").exists()


def test_out_refuses_while_folders_are_held_and_back_refuses_to_overwrite(tmp_path):
    project = _project(tmp_path)
    assert _hold(project, "out").returncode == 0
    again = _hold(project, "out")
    assert again.returncode == 2 and "holds folders already" in again.stderr

    # a folder of the same name made while the other was held: neither is moved onto the other
    clash = project / "benchmarks" / "results" / "2026-12-07-loraplus"
    clash.mkdir()
    refused = _hold(project, "back")
    assert refused.returncode == 2 and "exists beside the held copy" in refused.stderr
    assert not (project / "benchmarks" / "results" / "2026-12-06-loraplus").exists()
    assert (project / ".devstage" / "held" / "2026-12-07-loraplus" / "seed0" / "summary.json").exists()
