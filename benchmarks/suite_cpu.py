"""Where a command's CPU time goes, by kind of process: the test suite's, say, whose every process
(pytest-xdist's workers, the CLI runs, the benchmarks they start, Ray's daemons and trial workers)
is sampled from /proc while it runs. Linux only.

    python benchmarks/suite_cpu.py --out suite_cpu.json -- .venv/bin/pytest -q -p no:cacheprovider

Every process begun on the machine while the command runs is counted, its own or not: run it on a
machine doing nothing else. A process is read every --interval seconds, so one that lives less than
that may be missed; one that ends keeps the CPU time last read. Ray's daemons and workers are counted
though they leave the command's process tree (a shell's `time` misses them: they are not its children
when they end).

Each process is also counted to the test it ran for, where a test's temporary folder (pytest's
tmp_path, `.../pytest-N/[popen-gwK/]test_NAME`, before a shared fixture's folder) is in its command
line or its parent's, or its parent's parent's, and so on: a CLI run names its config there, and Ray's
daemons and workers descend from the driver that started them. What a test does inside pytest's own
process is not counted to it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
RAY_DAEMONS = ("gcs_server", "raylet", "dashboard/agent.py", "runtime_env/agent", "log_monitor", "monitor.py",
               "dashboard.py")


TEST_FOLDER = re.compile(r"/pytest-\d+/(?:popen-gw\d+/)?([^/\s]+)")


def kind_of(command: str) -> str:
    """The kind of process a command line names, as the summary groups them."""
    if "exec(eval(sys.stdin.readline()))" in command:
        return "pytest-xdist worker (the tests run in-process)"
    if "setup_worker.py" in command or "default_worker.py" in command or command.startswith("ray::"):
        return "Ray worker"
    if any(daemon in command for daemon in RAY_DAEMONS):
        return "Ray daemon"
    if "-m search " in command:
        return "CLI " + command.split("-m search ")[1].split(" ")[0]
    script = re.search(r"benchmarks/(\w+\.py)", command)
    if script:
        return "benchmarks/" + script.group(1)
    if " -c " in command:
        return "python -c"
    return "other"


def test_of(command: str) -> str | None:
    """The test folder a command line names, or None: a test's own (pytest's tmp_path, test_...) before a shared
    fixture's (the tiny model a test's command loads, say), else the fixture's (the command that builds it)."""
    found = TEST_FOLDER.findall(command)
    return next((folder for folder in found if folder.startswith("test_")), found[0] if found else None)


def _stat(pid: str) -> tuple[str, float, str] | None:
    """(start time, CPU seconds so far, parent's pid) of a live process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[19], (int(fields[11]) + int(fields[12])) / TICKS_PER_S, fields[1]


def _command(pid: str) -> str:
    """A process's command line; empty while it is still starting, or once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def sample(seen: dict, stop: threading.Event, interval: float) -> None:
    own = str(os.getpid())
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == own:
                continue
            read = _stat(pid)
            if read is None:
                continue
            started, cpu, parent = read
            # the parent as first seen: a process whose parent ends is handed to init
            kept = seen.setdefault((pid, started), {"command": "", "cpu_s": 0.0, "parent": parent})
            kept["cpu_s"] = cpu
            # read again each time: a process seen between its fork and its exec shows its parent's command line
            # (a sample taken as the command starts met the command itself so, and counted it as suite_cpu.py)
            kept["command"] = _command(pid) or kept["command"]
        stop.wait(interval)


def by_test(seen: dict, own: set) -> Counter:
    """CPU seconds by the test each process ran for: the first test folder named by its command line or
    an ancestor's (a pid's live process when the first was seen; pids are not reused within a run)."""
    latest = {pid: process for (pid, _), process in seen.items()}
    tests: Counter = Counter()
    for key in own:
        process, hops = seen[key], 0
        while process is not None and hops < 50:
            test = test_of(process["command"])
            if test:
                tests[test] += seen[key]["cpu_s"]
                break
            process, hops = latest.get(process["parent"]), hops + 1
    return tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the JSON summary to write")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between two reads of /proc")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    problem = ("no command given (put it after --)" if not command
               else "needs Linux's /proc" if not Path("/proc/self/stat").exists()
               else f"--out: no folder {args.out.parent}" if not args.out.parent.is_dir()
               else None)
    if problem:
        print(f"suite_cpu.py: {problem}", file=sys.stderr)
        return 2
    before = {(pid, read[0]) for pid in os.listdir("/proc") if pid.isdigit() and (read := _stat(pid))}
    seen: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(seen, stop, args.interval), daemon=True)
    began = time.perf_counter()
    sampler.start()
    status = subprocess.call(command)
    wall = time.perf_counter() - began
    stop.set()
    sampler.join()
    by_kind: Counter = Counter()
    processes: Counter = Counter()
    own = {key for key in seen if key not in before}  # running before the command began: not its own
    for key in own:
        process = seen[key]
        kind = kind_of(process["command"])
        by_kind[kind] += process["cpu_s"]
        processes[kind] += 1
    total = sum(by_kind.values())
    summary = {
        "command": command, "exit_code": status, "wall_s": round(wall, 1), "cpu_s": round(total, 1),
        "cores": os.cpu_count(), "interval_s": args.interval,
        "by_kind": [{"kind": kind, "cpu_s": round(cpu, 1), "share": round(cpu / total, 3) if total else 0,
                     "processes": processes[kind]} for kind, cpu in by_kind.most_common()],
        "by_test": [{"test": test, "cpu_s": round(cpu, 1)} for test, cpu in by_test(seen, own).most_common()],
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for row in summary["by_kind"]:
        print(f"{row['cpu_s']:8.0f} s {100 * row['share']:5.1f} %  {row['processes']:4d} processes  {row['kind']}")
    print(f"{total:8.0f} s of CPU in {wall:.0f} s on {os.cpu_count()} cores")
    for row in summary["by_test"][:10]:
        print(f"{row['cpu_s']:8.0f} s  {row['test']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
