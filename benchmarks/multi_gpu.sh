#!/usr/bin/env bash
# Multi-GPU sweep scaling, recorded in BENCHMARKS.md. On one machine with 2+ GPUs, from the repo
# root after set-up, with SmolLM2 fetched to $MODEL and DialogSum at $DATA:
#   benchmarks/multi_gpu.sh one_gpu      # 8 trials, 1 GPU each, Ray given GPU 0 only
#   benchmarks/multi_gpu.sh two_gpus     # the same sweep on 2 GPUs, 1 GPU each
#   benchmarks/multi_gpu.sh half_gpu     # the same sweep on 2 GPUs, half a GPU each
# No early stopping (grace_period = max_rungs) so every trial does the same work.
set -euo pipefail
case=${1:?one_gpu, two_gpus or half_gpu}
model=${MODEL:-/tmp/smolhf}; data=${DATA:-/tmp/ds}; results=${RESULTS:-/tmp/results}
common=(--set model.name_or_path="$model" --set data.path="$data" --set storage="$results"
        --set search.num_trials=8 --set search.max_concurrent_trials=8
        --set scheduler.max_rungs=2 --set scheduler.grace_period=2
        --set training.steps_per_rung=15 --set data.max_validation_examples=32 --set evaluation.max_new_tokens=48)
case $case in
  one_gpu)  CUDA_VISIBLE_DEVICES=0 python3 -m search run configs/smollm2_dialogsum_gpu.yaml "${common[@]}" \
              --set name=scale-one-gpu --set resources.gpus_per_trial=1 ;;
  two_gpus) python3 -m search run configs/smollm2_dialogsum_gpu.yaml "${common[@]}" \
              --set name=scale-two-gpus --set resources.gpus_per_trial=1 ;;
  half_gpu) python3 -m search run configs/smollm2_dialogsum_gpu.yaml "${common[@]}" \
              --set name=scale-half-gpu --set resources.gpus_per_trial=0.5 ;;
  *) echo "unknown case $case" >&2; exit 2 ;;
esac
