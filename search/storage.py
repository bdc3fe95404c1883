"""Where a sweep may keep its experiment folder.

Ray Tune no longer syncs trial folders to the head node: each trial writes checkpoints and
results straight to the storage path from the node it runs on. A local path therefore works on
one machine, or on a cluster only when it is one shared file system mounted on every node.
Ray can't tell the two apart, so we check: the driver writes a marker and every alive node looks
for it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from search.config import SweepConfig
from search.experiment import experiment_path, is_uri
from search.tuner import alive_node_count, nodes_that_cannot_see
from trainables.errors import ConfigError


def check_storage_for_cluster(sweep: SweepConfig) -> None:
    """Refuse, before any trial starts, a local storage path that some cluster node can't see."""
    if is_uri(sweep.storage) or alive_node_count() <= 1:
        return  # a bucket URI, which every node writes to directly; or one machine
    root = Path(experiment_path(sweep)).parent
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".qlora-sweep-visibility-{uuid.uuid4().hex}"
    marker.write_text("written by the sweep driver\n")
    try:
        blind, nodes = nodes_that_cannot_see(str(marker))
    finally:
        marker.unlink(missing_ok=True)
        if created:
            root.rmdir()
    if blind:
        raise ConfigError(
            f"storage {sweep.storage}: a local path that {blind} of the cluster's {nodes} nodes cannot see; "
            "Ray does not sync trial folders to the head node, so checkpoints would be scattered over the nodes. "
            "Use a bucket URI (s3://..., gs://...) or a path on a shared file system mounted on every node"
        )
