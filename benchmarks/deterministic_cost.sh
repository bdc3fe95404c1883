#!/usr/bin/env bash
# Where training.deterministic's cost goes (issue 11: 0.72x the defaults' pace by turns on an H100,
# benchmarks/results/2026-12-05-determinism-repeat), and what it costs compiled layers. A GPU job for the
# device chain, no extra staging (the SmolLM2-135M shape with random weights, the recipe's values):
#   call 1  carry [".devbundle", ".devstage/inputs.tar.xz"]
#           bash .devbundle/unpack.sh && mkdir -p /tmp/res && bash benchmarks/compile_bundle.sh /tmp/res \
#             && bash /tmp/detach.sh 'bash benchmarks/deterministic_cost.sh' && bash /tmp/wait.sh 480
#   call 2+ bash /tmp/wait.sh 540   (at once after each reply; about 20 minutes in all)
# Each part writes under /tmp/res as it ends, so a chain cut short keeps the parts before. PARTS picks
# them (default: all three, in this order). TRIALS (in all: the first cold, then the sides by turns;
# default 5) and WARMUP_S (fill-on's GPU warm-up, default 60) shrink part 1 for a session with little
# device time left.
#   1 fill-on   benchmarks/first_rung.py in one process: a cold trial, then default and deterministic
#               trials by turns, step 30 (rung 2) of each profiled; kernel_cost_by_side compares the
#               sides kernel by kernel. The cold trial makes cuBLAS's workspace before any trial sets
#               CUBLAS_WORKSPACE_CONFIG, so both sides share torch's default workspace: this part
#               weighs the deterministic kernels, not the workspace.
#   2 fill-off  the same with torch.utils.deterministic.fill_uninitialized_memory off (torch's default
#               fills every tensor torch.empty hands out while deterministic algorithms are on, which
#               its documentation says costs time): is that part of the cost?
#   3 compiled  benchmarks/shared_determinism.py: sweeps of 6 trials at once with compiled layers,
#               default and deterministic by turns, 2 rounds: the pace ratio not yet measured, and
#               whether compiled defaults vary as eager ones do.
set -uo pipefail
PARTS=${PARTS:-"fill-on fill-off compiled"}
mkdir -p /tmp/res
python3 -c "import sys; from pathlib import Path; sys.path[:0]=['benchmarks','.']; from trial_speed import build_random_model; build_random_model('smollm2-135m','/tmp/stage/smollm2-135m-instruct-tokenizer',Path('/tmp/random-smollm2'))"
SETS=(--set data.path=/tmp/stage/dialogsum --set model.name_or_path=/tmp/random-smollm2 --set scheduler.max_rungs=2
      --set data.max_validation_examples=32 --set evaluation.rung_examples=all --set evaluation.max_new_tokens=8)
AB=(--trials "${TRIALS:-5}" --profile-steps 30 --candidate training.deterministic=true)
for part in $PARTS; do
  began=$SECONDS
  case $part in
    fill-on)
      python3 benchmarks/first_rung.py configs/sweep_benchmark_gpu.yaml --out /tmp/res/fill-on.json --warmup-s "${WARMUP_S:-60}" \
          "${AB[@]}" "${SETS[@]}" > /tmp/res/fill-on.log 2>&1 ;;
    fill-off)
      python3 -c "
import runpy, sys
import torch.utils.deterministic
torch.utils.deterministic.fill_uninitialized_memory = False  # read only while deterministic algorithms are on
sys.argv = ['benchmarks/first_rung.py', *sys.argv[1:]]
runpy.run_path('benchmarks/first_rung.py', run_name='__main__')
" configs/sweep_benchmark_gpu.yaml --out /tmp/res/fill-off.json --warmup-s 30 "${AB[@]}" "${SETS[@]}" \
          > /tmp/res/fill-off.log 2>&1 ;;
    compiled)
      mkdir -p /tmp/res/compiled
      python3 benchmarks/shared_determinism.py configs/sweep_benchmark_gpu.yaml \
          --out /tmp/res/compiled/determinism-compiled.json --runs 2 --warmup-s 30 \
          --group compiled:6:training.compile_layers=true \
          --group compiled-deterministic:6:training.deterministic=true,training.compile_layers=true \
          "${SETS[@]}" > /tmp/res/compiled/job.log 2>&1 ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
  echo "$part exit $? after $((SECONDS - began)) s"
done
