#!/usr/bin/env bash
# Issue 10's next GPU run as one detached job, in the order a cut-short chain loses least: the GPU
# tests (cut twice before), the 8B defaults as a user now gets them (77d8c16), the 8B trials sharing
# one GPU (the numbers gpus_per_trial: auto's choice needs, item 4), then the 1B list. No weights
# needed: one staging call. Each part's log and JSON go to /tmp/res as it ends.
# The device chain (../shared/tools/README.md; ask `status` first: a session's 30 minutes count
# an earlier try's, and this needs about 28):
#   call 1  carry [".devbundle", ".devstage/inputs.tar.xz"]
#           bash .devbundle/unpack.sh && bash /tmp/detach.sh 'bash benchmarks/trial_speed_chain.sh' && bash /tmp/wait.sh 540
#   call 2+ bash /tmp/wait.sh 540
# Estimated (not measured): start 2 min, GPU tests 4 (one a 2-trial compiled sweep through Ray), 8B list 8,
# sharing 7, 1B 5.
set -u
stage=${STAGE:-/tmp/stage}
res=${RES:-/tmp/res}
data=$stage/dialogsum
tokenizer=$stage/smollm2-135m-instruct-tokenizer
export MODEL_CACHE=${MODEL_CACHE:-/tmp/models}  # the 8B model built once for the 8B list and the sharing runs
mkdir -p "$res" "$MODEL_CACHE"
pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|bitsandbytes|liger)" > "$res/versions.txt"
python3 tests/tiny_model.py /tmp/tiny > /dev/null \
    && timeout 480 python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_gpu.py > "$res/gpu_tests.log" 2>&1
echo "gpu tests: exit $?"
OUT=$res ONLY=8b bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/job8b.log" 2>&1
echo "8b: exit $?"
OUT=$res ONLY=sharing bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/sharing.log" 2>&1
echo "sharing: exit $?"
SKIP_EVAL=1 OUT=$res ONLY=1b bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/job1b.log" 2>&1
echo "1b: exit $?"
