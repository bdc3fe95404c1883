"""cluster.yaml is a valid Ray cluster-launcher config with the security and scaling it promises."""

import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from ray.autoscaler._private.util import prepare_config, validate_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())


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


def test_every_node_installs_qlora_sweep_from_its_pinned_project_file_into_a_python_it_supports():
    assert CLUSTER["file_mounts"]["/home/ubuntu/qlora-sweep"] == "."
    setup = CLUSTER["setup_commands"]
    assert any("pip install -q --python ~/qlora-venv/bin/python -e ~/qlora-sweep" in c for c in setup)
    (made,) = [c for c in setup if " venv " in c]
    python = made.split("--python ")[1].split()[0]  # the environment's Python, which the project must admit
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python in SpecifierSet(project), (python, project)
    # on the PATH of what Ray starts after setup (`ray start`, a job's `python -m search`)
    assert setup[-1].endswith(""">> ~/.bashrc""") and "qlora-venv/bin" in setup[-1]


def test_every_node_type_names_a_current_ubuntu_image_and_gpu_workers_one_with_nvidias_driver():
    # Ray's default AMI (Ubuntu 18.04, V71.0) has Python 3.10 at most and a driver too old for torch's CUDA wheels
    types = CLUSTER["available_node_types"]
    for name, node_type in types.items():
        image = node_type["node_config"]["ImageId"]
        assert image.startswith("resolve:ssm:/aws/service/") and "24.04" in image, (name, image)
        if name != CLUSTER["head_node_type"]:
            assert "nvidia-driver-gpu" in image, (name, image)


def test_no_node_runs_a_bare_pip_after_rays_defaults_are_filled_in():
    # Ray adds `pip install boto3` on the head unless the file says otherwise: a pip the venv does not have
    prepared = prepare_config(CLUSTER)
    commands = prepared["setup_commands"] + prepared["head_setup_commands"] + prepared["worker_setup_commands"]
    assert not [c for c in commands if c.startswith("pip ") or " pip install" in c and "uv pip" not in c], commands
    assert any("boto3" in c and "qlora-venv" in c for c in prepared["head_setup_commands"])
