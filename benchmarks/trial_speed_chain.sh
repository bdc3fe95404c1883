#!/usr/bin/env bash
# Issue 10's next GPU run as one detached job. The fifth run (benchmarks/results/2026-12-02-trial-speed-
# defaults, 28 min of device time) measured the GPU tests (4:08), the 8B defaults (about 9 min) and the
# 8B trials sharing one GPU (about 9 min); the 1B list after them was cut. What is left: the
# Llama-3.2-1B shape on the current defaults, with its FlexAttention and compiled sides (about 6 min),
# then the GPU tests again (about 5 min with the tiny model's build). PARTS="1b gpu-tests 8b sharing"
# runs more, in that order. No weights needed: one staging call. Each part's log and JSON go to
# /tmp/res as it ends.
# The device chain (../shared/tools/README.md; ask `status` first: a session's 30 minutes count
# an earlier try's):
#   call 1  carry [".devbundle", ".devstage/inputs.tar.xz"]
#           bash .devbundle/unpack.sh && bash /tmp/detach.sh 'bash benchmarks/trial_speed_chain.sh' && bash /tmp/wait.sh 540
#   call 2+ bash /tmp/wait.sh 540
set -u
stage=${STAGE:-/tmp/stage}
res=${RES:-/tmp/res}
data=$stage/dialogsum
tokenizer=$stage/smollm2-135m-instruct-tokenizer
export MODEL_CACHE=${MODEL_CACHE:-/tmp/models}  # the 8B model built once for the 8B list and the sharing runs
mkdir -p "$res" "$MODEL_CACHE"
pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|bitsandbytes|liger|ray)" > "$res/versions.txt"
for part in ${PARTS:-1b gpu-tests}; do
    case $part in
        1b) SKIP_EVAL=1 OUT=$res ONLY=1b bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/job1b.log" 2>&1 ;;
        gpu-tests) python3 tests/tiny_model.py /tmp/tiny > /dev/null \
            && timeout 480 python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_gpu.py > "$res/gpu_tests.log" 2>&1 ;;
        8b) OUT=$res ONLY=8b bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/job8b.log" 2>&1 ;;
        sharing) OUT=$res ONLY=sharing bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/sharing.log" 2>&1 ;;
        *) echo "unknown part $part (1b, gpu-tests, 8b, sharing)"; exit 2 ;;
    esac
    echo "$part: exit $?"
done
