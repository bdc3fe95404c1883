"""A sweep's local Ray starts where Ray's dashboard cannot: `resources.ray_dashboard: true`, the
default, asks for the dashboard where its packages are, and never makes their absence an error."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, short_ray_temp

pytestmark = pytest.mark.sweep

# Ray without ray[default]'s packages (pip install ray), as on the GPU machine of 2026-12-04, whose
# sweep failed with "Cannot include dashboard with missing packages." when run asked for it by name.
# Ray decides by importing ray.dashboard.optional_deps; a None in sys.modules makes that import fail.
START_WITHOUT_DASHBOARD_PACKAGES = """
import sys
sys.modules["ray.dashboard.optional_deps"] = None
import ray
from search.tuner import start_ray
start_ray(dashboard=True)
print("started", ray.is_initialized())
ray.shutdown()
"""


def test_the_default_dashboard_setting_starts_ray_where_the_dashboard_packages_are_missing():
    with short_ray_temp() as ray_temp:
        done = subprocess.run([sys.executable, "-c", START_WITHOUT_DASHBOARD_PACKAGES], capture_output=True,
                              text=True, cwd=ROOT, timeout=120, env={**os.environ, "RAY_TMPDIR": str(ray_temp)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started True" in done.stdout
    assert "View the dashboard" not in done.stdout + done.stderr
