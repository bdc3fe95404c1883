"""cluster.yaml is a valid Ray cluster-launcher config with the security and scaling it promises."""

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

pytestmark = pytest.mark.unit

CLUSTER = yaml.safe_load((Path(__file__).resolve().parent.parent / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_schema():
    # As `ray up` does: fill in the provider's defaults, then check against ray-schema.json.
    validate_config(prepare_config(CLUSTER))
    broken = {**CLUSTER, "head_node_typo": "head"}
    with pytest.raises(jsonschema.ValidationError, match="'head_node_typo' was unexpected"):
        validate_config(prepare_config(broken))  # the same check rejects what the schema does not know


def test_head_is_cpu_only_and_gpu_workers_autoscale():
    types = CLUSTER["available_node_types"]
    assert types[CLUSTER["head_node_type"]]["resources"] == {"CPU": 0}
    gpu_types = [t for name, t in types.items() if name != CLUSTER["head_node_type"]]
    assert len(gpu_types) >= 2
    for node_type in gpu_types:
        assert node_type["min_workers"] == 0 < node_type["max_workers"]
        assert node_type["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4", "p5"))


def test_token_auth_on_every_node_and_dashboard_on_loopback_only():
    starts = CLUSTER["head_start_ray_commands"] + CLUSTER["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in ray_starts)
    head = " ".join(CLUSTER["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "/home/ubuntu/.ray/auth_token" in CLUSTER["file_mounts"]


def test_every_node_installs_qlora_sweep_from_its_pinned_project_file():
    assert CLUSTER["file_mounts"]["/home/ubuntu/qlora-sweep"] == "."
    assert any("pip install -q -e ~/qlora-sweep" in c for c in CLUSTER["setup_commands"])
