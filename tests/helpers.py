import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def short_ray_temp() -> Iterator[Path]:
    """A RAY_TMPDIR of one Ray's own, under /tmp (Ray's socket paths have a length limit that pytest's
    tmp_path can pass), removed afterwards."""
    ray_temp = Path(tempfile.mkdtemp(prefix="qs-ray-", dir="/tmp"))
    try:
        yield ray_temp
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


class RecordingSession:
    """A trainables.report.TrialSession without Ray, for run_trial in the test's own process: keeps each
    rung's metrics (`rungs`) and the checkpoint it came with (`checkpoints`, None for a diverged rung);
    never resumes."""

    def __init__(self) -> None:
        self.rungs: list[dict] = []
        self.checkpoints: list[str | None] = []

    def report(self, metrics, checkpoint_dir) -> None:
        self.rungs.append(metrics)
        self.checkpoints.append(checkpoint_dir)

    def placement(self) -> dict[str, str]:
        return {"node_id": "here", "gpu_ids": ""}

    @contextlib.contextmanager
    def checkpoint_to_resume(self):
        yield None


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m search ...` as a user runs it, in its own process (and its own local Ray)."""
    return subprocess.run([sys.executable, "-m", "search", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / "params.json").exists())


def process_tree(pid: int) -> set[int]:
    """The driver's descendants: the local Ray it started (GCS, raylet) and that Ray's workers."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(map(int, table[::2]), map(int, table[1::2])):
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def ray_processes_still_running(pids: set[int]) -> int:
    """Those of the dead driver's Ray processes still alive. Its dashboard and runtime-env agents
    linger a minute longer but write nothing to the experiment. Other tests' Rays (the suite runs
    two tests at a time) are not counted."""
    alive = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z" and "Agent" not in command:
            alive += 1
    return alive


def sample_training_set(tokenizer, count: int):
    """The shipped sample's first `count` dialogues, tokenized for training as a trial does."""
    import json

    from datasets import Dataset

    from tests.tiny_model import SAMPLE
    from trainables.config import PromptConfig
    from trainables.data import tokenize_for_training

    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:count]]
    return tokenize_for_training(Dataset.from_list(rows), tokenizer, PromptConfig(), max_length=1000)


def fake_nvidia_smi(folder: Path) -> Path:
    """An `nvidia-smi` in `folder` (put it first on PATH) that answers as the real one does on a GPU
    machine: the text of folder/reply on stdout, or exit 6 where that text is `fail` ("No devices were
    found"); each call's arguments appended to folder/asked, after the pid of the process that ran it. This
    project's machines have no GPU, so no real nvidia-smi."""
    tool = folder / "nvidia-smi"
    tool.write_text('#!/bin/sh\necho "$PPID $@" >> "$(dirname "$0")/asked"\nreply=$(cat "$(dirname "$0")/reply")\n'
                    '[ "$reply" = fail ] && exit 6\necho "$reply"\n')
    tool.chmod(0o755)
    return tool


def rate_and_decay_by_parameter(model, optimizer) -> dict[str, tuple[float, float]]:
    """Each parameter the optimizer holds, by its name in the model: its group's learning rate and weight decay."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(p)]: (group["lr"], group["weight_decay"]) for group in optimizer.param_groups
            for p in group["params"]}
