#!/usr/bin/env bash
# Issue 10's measurements on one GPU, JSON into $OUT (default benchmarks/results/): the Llama-3-8B
# and Llama-3.2-1B shapes, each side against the plain recipe by the warm-up-and-alternate protocol
# of benchmarks/trial_speed.py; with QUALITY=1, also the ROUGE-L check on SmolLM2 with two seeds
# (it needs SmolLM2's real weights). Run from the repo root:
#   benchmarks/trial_speed.sh /path/to/dialogsum /path/to/SmolLM2-folder-or-tokenizer
# MODEL_CACHE=DIR keeps the random-weight models there for a later run.
set -euo pipefail
data=${1:?path to a DialogSum folder (train.jsonl, validation.jsonl)}
smollm2=${2:?path to SmolLM2-135M-Instruct (a model folder from qlora-sweep fetch-model, or its tokenizer)}
out=${OUT:-benchmarks/results}
cache=(${MODEL_CACHE:+--model-cache "$MODEL_CACHE"})
mkdir -p "$out"
python3 benchmarks/trial_speed.py --shape llama3-8b --data "$data" --tokenizer "$smollm2" "${cache[@]}" \
    --out "$out/trial_speed_llama3-8b.json"
python3 benchmarks/trial_speed.py --shape llama3.2-1b --data "$data" --tokenizer "$smollm2" "${cache[@]}" \
    --out "$out/trial_speed_llama3.2-1b.json" --micro-batch-size 16 --one-gpu-micro-batch-size 32
if [ "${QUALITY:-0}" = 1 ]; then
    python3 benchmarks/trial_speed.py --shape llama3.2-1b --data "$data" --tokenizer "$smollm2" "${cache[@]}" \
        --out "$out/trial_speed_quality.json" --skip-eval --rounds 1 --warmup-s 0 \
        --quality-model "$smollm2" --quality-seeds 0 1 --quality-steps 60 --micro-batch-size 16
fi
