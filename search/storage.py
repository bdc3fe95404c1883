"""Where a sweep may keep its experiment folder.

Ray Tune no longer syncs trial folders to the head node: each trial writes checkpoints and
results straight to the storage path from the node it runs on. A local path therefore works on
one machine, or on a cluster only when it is one shared file system mounted on every node.
Ray can't tell the two apart, so we check: the driver writes a marker and a task on every alive
node looks for it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from search.config import ConfigError, SweepConfig, is_uri

VISIBILITY_TIMEOUT_S = 120


def check_storage_for_cluster(sweep: SweepConfig) -> None:
    """Refuse, before any trial starts, a local storage path that some cluster node can't see."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if is_uri(sweep.storage):
        return  # a bucket URI: every node writes to it directly
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) <= 1:
        return
    root = Path(sweep.experiment_path).parent
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".qlora-sweep-visibility-{uuid.uuid4().hex}"
    marker.write_text("written by the sweep driver\n")

    @ray.remote(num_cpus=0, max_retries=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        checks = {
            node["NodeID"]: sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(str(marker))
            for node in nodes
        }
        blind = [node_id for node_id, ref in checks.items() if not ray.get(ref, timeout=VISIBILITY_TIMEOUT_S)]
    finally:
        marker.unlink(missing_ok=True)
        if created:
            root.rmdir()
    if blind:
        raise ConfigError(
            f"storage {sweep.storage}: a local path that {len(blind)} of the cluster's {len(nodes)} nodes cannot see; "
            "Ray does not sync trial folders to the head node, so checkpoints would be scattered over the nodes. "
            "Use a bucket URI (s3://..., gs://...) or a path on a shared file system mounted on every node"
        )
