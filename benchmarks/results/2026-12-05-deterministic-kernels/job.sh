#!/usr/bin/env bash
# The GPU job behind this folder (run by /tmp/detach.sh in /tmp/proj, after unpack.sh): where
# training.deterministic's cost lands, kernel by kernel. benchmarks/first_rung.py in one process: a
# cold trial, then default and deterministic trials by turns, one later step of each profiled and
# kernel_cost_by_side comparing the sides. Twice: as the switch is (torch fills the memory torch.empty
# hands out while deterministic algorithms are on), and with torch.utils.deterministic's
# fill_uninitialized_memory off in the same process (the second file).
set -uo pipefail
mkdir -p /tmp/res
python3 -c "import sys; from pathlib import Path; sys.path[:0]=['benchmarks','.']; from trial_speed import build_random_model; build_random_model('smollm2-135m','/tmp/stage/smollm2-135m-instruct-tokenizer',Path('/tmp/random-smollm2'))"
SETS=(--set data.path=/tmp/stage/dialogsum --set model.name_or_path=/tmp/random-smollm2 --set scheduler.max_rungs=2
      --set data.max_validation_examples=32 --set evaluation.rung_examples=all --set evaluation.max_new_tokens=8)
AB=(--trials 7 --profile-steps 30 --candidate training.deterministic=true)
python3 benchmarks/first_rung.py configs/sweep_benchmark_gpu.yaml --out /tmp/res/fill-on.json --warmup-s 60 \
    "${AB[@]}" "${SETS[@]}" > /tmp/res/fill-on.log 2>&1
echo "fill-on exit $?"
python3 -c "
import runpy, sys
import torch.utils.deterministic
torch.utils.deterministic.fill_uninitialized_memory = False  # read only while deterministic algorithms are on
sys.argv = ['benchmarks/first_rung.py', *sys.argv[1:]]
runpy.run_path('benchmarks/first_rung.py', run_name='__main__')
" configs/sweep_benchmark_gpu.yaml --out /tmp/res/fill-off.json --warmup-s 30 "${AB[@]}" "${SETS[@]}" \
    > /tmp/res/fill-off.log 2>&1
echo "fill-off exit $?"
