"""Whether the Hugging Face hub can be reached, decided before anything that reads it is imported.

transformers and datasets read HF_HUB_OFFLINE once, at import; with a hub id in the config and no
network, the hub client would retry for about 50 s before failing. So the CLI asks here first (a
3 s probe) and, with no hub, makes both look only in the local cache. Ray workers started from
this process inherit the setting.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from search.config import SweepConfig


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub can't be used, or None. A 3 s probe, instead of the hub client's
    ~50 s of retries before it says the same."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} is unreachable: {exc.strerror or exc}"
    return None


def prefer_local_cache_when_offline(sweep: SweepConfig) -> str | None:
    """With a hub id in the config and no hub, look only in the local Hugging Face cache; returns
    why the hub cannot be used, or None."""
    uses_hub = not Path(sweep.model.name_or_path).is_absolute() or (
        sweep.data.path is not None and not Path(sweep.data.path).is_absolute()
    )
    reason = hub_unreachable() if uses_hub else None
    if reason:
        os.environ["HF_HUB_OFFLINE"] = "1"
    return reason
