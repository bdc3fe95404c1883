import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m search ...` as a user runs it, in its own process (and its own local Ray)."""
    return subprocess.run([sys.executable, "-m", "search", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / "params.json").exists())
