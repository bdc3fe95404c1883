#!/usr/bin/env bash
# Where training.deterministic's cost goes (issue 11), a GPU job for the device chain, no extra staging (the
# SmolLM2-135M shape with random weights, the recipe's values):
#   call 1  carry [".devbundle", ".devstage/inputs.tar.xz"]
#           bash .devbundle/unpack.sh && mkdir -p /tmp/res && bash benchmarks/compile_bundle.sh /tmp/res \
#             && bash /tmp/detach.sh 'bash benchmarks/deterministic_cost.sh' && bash /tmp/wait.sh 480
#   call 2+ bash /tmp/wait.sh 540   (at once after each reply; about 20 minutes in all)
# Each part writes under /tmp/res as it ends, so a chain cut short keeps the parts before. PARTS picks them
# (default: warm-default warm-default-cublas pace compiled, in this order). TRIALS (first_rung's parts, in
# all: the first cold, then the sides by turns; default 5) and WARMUP_S (the first part's GPU warm-up,
# default 60) shrink them.
#   warm-default  benchmarks/first_rung.py, every trial default, one process: do warm trials run slower than
#                 the cold one? On 2026-12-05 (results/2026-12-05-deterministic-cost) every trial after the
#                 first ran 0.31-0.36 s a step against its 0.21-0.25 s, but there deterministic trials came
#                 between: this says whether they left that behind or warm trials pay it anyway.
#   warm-default-cublas  the same with CUBLAS_WORKSPACE_CONFIG=:4096:8 from the start, which a deterministic
#                 trial sets and leaves set: is that what slowed the trials after it (aten::mm's own host
#                 time 43 ms a step in the cold trial, 98-127 ms in the later ones)?
#   pace          benchmarks/shared_determinism.py: sweeps of 6 trials at once (fresh processes), default and
#                 deterministic by turns, 2 rounds, with torch's fill of new memory now off in deterministic
#                 trials (training.fill_uninitialized_memory's default): 0.72x with the fill before.
#   compiled      the same with compiled layers: not yet measured by turns.
#   fill-on       first_rung's A/B, default against deterministic with torch's fill (run 2026-12-05).
#   fill-off      the same A/B without the fill, the default since (run 2026-12-05).
# Deterministic trials set CUBLAS_WORKSPACE_CONFIG; in first_rung's one process the cold trial has made
# cuBLAS's workspace before, so both sides share torch's default workspace there.
set -uo pipefail
PARTS=${PARTS:-"warm-default warm-default-cublas pace compiled"}
mkdir -p /tmp/res
python3 -c "import sys; from pathlib import Path; sys.path[:0]=['benchmarks','.']; from trial_speed import build_random_model; build_random_model('smollm2-135m','/tmp/stage/smollm2-135m-instruct-tokenizer',Path('/tmp/random-smollm2'))"
SETS=(--set data.path=/tmp/stage/dialogsum --set model.name_or_path=/tmp/random-smollm2 --set scheduler.max_rungs=2
      --set data.max_validation_examples=32 --set evaluation.rung_examples=all --set evaluation.max_new_tokens=8)
FIRST_RUNG=(python3 benchmarks/first_rung.py configs/sweep_benchmark_gpu.yaml --trials "${TRIALS:-5}"
            --profile-steps 30)
SWEEPS=(python3 benchmarks/shared_determinism.py configs/sweep_benchmark_gpu.yaml --runs 2)
warmup=${WARMUP_S:-60}  # the first part warms the GPU up; the later ones find it warm
for part in $PARTS; do
  began=$SECONDS
  case $part in
    warm-default)
      "${FIRST_RUNG[@]}" --out /tmp/res/warm-default.json --warmup-s "$warmup" "${SETS[@]}" \
          > /tmp/res/warm-default.log 2>&1 ;;
    warm-default-cublas)
      CUBLAS_WORKSPACE_CONFIG=:4096:8 "${FIRST_RUNG[@]}" --out /tmp/res/warm-default-cublas.json --warmup-s "$warmup" \
          "${SETS[@]}" > /tmp/res/warm-default-cublas.log 2>&1 ;;
    fill-on)
      "${FIRST_RUNG[@]}" --out /tmp/res/fill-on.json --warmup-s "$warmup" --candidate training.deterministic=true \
          --candidate training.fill_uninitialized_memory=true "${SETS[@]}" > /tmp/res/fill-on.log 2>&1 ;;
    fill-off)
      "${FIRST_RUNG[@]}" --out /tmp/res/fill-off.json --warmup-s "$warmup" --candidate training.deterministic=true \
          "${SETS[@]}" > /tmp/res/fill-off.log 2>&1 ;;
    pace)
      mkdir -p /tmp/res/pace
      "${SWEEPS[@]}" --out /tmp/res/pace/determinism-pace.json --warmup-s "$warmup" \
          --group shared:6 --group deterministic:6:training.deterministic=true \
          "${SETS[@]}" > /tmp/res/pace/job.log 2>&1 ;;
    compiled)
      mkdir -p /tmp/res/compiled
      "${SWEEPS[@]}" --out /tmp/res/compiled/determinism-compiled.json --warmup-s "$warmup" \
          --group compiled:6:training.compile_layers=true \
          --group compiled-deterministic:6:training.deterministic=true,training.compile_layers=true \
          "${SETS[@]}" > /tmp/res/compiled/job.log 2>&1 ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
  echo "$part exit $? after $((SECONDS - began)) s"
  warmup=15
done
