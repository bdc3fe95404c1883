"""The experiment folder before and around a sweep: storage that cannot be written is refused
before anything starts, and the driver's heartbeat tells a live sweep from one whose driver died."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from search.config import SweepConfig
from search.experiment import DRIVER_HEARTBEAT, check_storage_writable, driver_is_gone, write_driver_heartbeat
from trainables.errors import ConfigError

pytestmark = pytest.mark.unit


def _sweep(storage):
    return SweepConfig(name="s", storage=str(storage), model={"name_or_path": "/models/m"})


def test_a_writable_storage_passes_and_the_folders_the_probe_made_are_gone_again(tmp_path):
    check_storage_writable(_sweep(tmp_path / "new" / "results"))
    assert list(tmp_path.iterdir()) == []  # the sweep creates them when it starts, not the check
    (tmp_path / "kept").mkdir()
    check_storage_writable(_sweep(tmp_path / "kept"))
    assert list((tmp_path / "kept").iterdir()) == []  # the probe file is removed


@pytest.mark.parametrize("storage,reason", [
    ("{tmp}/a-file", "{tmp}/a-file is not a directory"),
    ("{tmp}/a-file/below", "{tmp}/a-file is not a directory"),
    ("/proc/qlora-sweep-nope", "cannot be written ("),
    ("file:///proc/qlora-sweep-nope", "cannot be written ("),
])
def test_storage_that_cannot_be_written_is_refused_naming_the_path_and_why(tmp_path, storage, reason):
    (tmp_path / "a-file").write_text("not a folder")
    storage, reason = storage.format(tmp=tmp_path), reason.format(tmp=tmp_path)
    with pytest.raises(ConfigError, match="^storage ") as error:
        check_storage_writable(_sweep(storage))
    assert storage in str(error.value) and reason in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_heartbeat_tells_a_live_driver_from_a_dead_one_and_from_an_ended_sweep(tmp_path):
    assert driver_is_gone(tmp_path) is None  # no heartbeat: not known
    write_driver_heartbeat(str(tmp_path))
    assert driver_is_gone(tmp_path) is False  # this process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    beat = json.loads((tmp_path / DRIVER_HEARTBEAT).read_text())
    (tmp_path / DRIVER_HEARTBEAT).write_text(json.dumps({**beat, "pid": int(dead.stdout)}))
    assert driver_is_gone(tmp_path) is True  # a driver on this machine whose process has ended
    elsewhere = {**beat, "host": socket.gethostname() + "-other"}
    (tmp_path / DRIVER_HEARTBEAT).write_text(json.dumps({**elsewhere, "heartbeat": time.time()}))
    assert driver_is_gone(tmp_path) is False  # another machine's driver, heard from just now
    (tmp_path / DRIVER_HEARTBEAT).write_text(json.dumps({**elsewhere, "heartbeat": time.time() - 3600}))
    assert driver_is_gone(tmp_path) is True  # silent for an hour
    write_driver_heartbeat(str(tmp_path), ended=True)
    assert driver_is_gone(tmp_path) is False and not list(tmp_path.glob("*.partial"))
    assert json.loads((tmp_path / DRIVER_HEARTBEAT).read_text())["pid"] == os.getpid()


def test_code_run_from_a_copy_that_was_never_installed_names_its_source_trees_version(monkeypatch):
    """The resolved config's header names the code that ran it: a GPU machine without a registry runs
    a copy of the tree that pip never installed, where the installed version cannot be asked for."""
    import tomllib
    from importlib.metadata import PackageNotFoundError

    import search.experiment as experiment
    from tests.helpers import ROOT

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    def not_installed(name):
        raise PackageNotFoundError(name)

    assert experiment.code_version().startswith(declared) and "not installed" not in experiment.code_version()
    monkeypatch.setattr(experiment, "version", not_installed)
    assert experiment.code_version().startswith(f"{declared} (not installed)")
