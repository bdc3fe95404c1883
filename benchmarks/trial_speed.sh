#!/usr/bin/env bash
# Issue 4's measurements on one GPU, one run each, JSON into $OUT (default benchmarks/results/):
# the Llama-3-8B and Llama-3.2-1B shapes against the plain recipe, then the ROUGE-L check on
# SmolLM2 with two seeds. Run from the repo root:
#   benchmarks/trial_speed.sh /path/to/dialogsum /path/to/SmolLM2-folder
# (the SmolLM2 folder is what `qlora-sweep fetch-model` writes; it also serves as the tokenizer).
# On the 8B shape two more settings of qlora-sweep's training are timed beside its defaults:
# full logits instead of TRL's fused LM head, and twice the micro-batch within the plain side's
# peak; the plain side is timed again at the end to show drift.
# MODEL_CACHE=DIR keeps the random-weight models there for a later run.
set -euo pipefail
data=${1:?path to a DialogSum folder (train.jsonl, validation.jsonl)}
smollm2=${2:?path to the SmolLM2-135M-Instruct folder from qlora-sweep fetch-model}
out=${OUT:-benchmarks/results}
cache=(${MODEL_CACHE:+--model-cache "$MODEL_CACHE"})
mkdir -p "$out"
python3 benchmarks/trial_speed.py --shape llama3-8b --data "$data" --tokenizer "$smollm2" "${cache[@]}" \
    --out "$out/trial_speed_llama3-8b.json" \
    --variant fused_lm_head=false --variant micro_batch_size=16 --plain-again
python3 benchmarks/trial_speed.py --shape llama3.2-1b --data "$data" --tokenizer "$smollm2" "${cache[@]}" \
    --out "$out/trial_speed_llama3.2-1b.json" --eval-examples 500 \
    --quality-model "$smollm2" --quality-seeds 0 1 --quality-steps 60 --micro-batch-size 16
