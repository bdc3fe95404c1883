#!/usr/bin/env bash
# Issue 10's GPU runs as one detached job. The sixth run (benchmarks/results/2026-12-02-trial-speed-1b,
# about 21 min of device time) measured the Llama-3.2-1B shape on the current defaults (its 722 s
# warm-up: the one-GPU side's first segment took 594 s, where the 8B shape's first compiled side had
# taken 108 s) and the GPU tests (4:01). What it left: where a cold compile of the 1B shape's layers
# spends its time, first in a fresh process on a fresh machine, then again with inductor's on-disk
# caches warm, as a sweep's later worker meets it (benchmarks/compile_cost.py, at most about 15 min;
# its JSON is rewritten after every step). PARTS picks parts, in order: compile-cost (the default),
# 1b, gpu-tests, 8b, sharing, levers. No weights needed: one staging call.
# levers (issue 11, about 8 minutes): what Liger's kernels, TRL's fused LM head and padding-free
# micro-batches buy or cost a SmolLM2-135M trial as the sweep benchmark runs them: 6 trials at a time
# on the GPU, each in a process of its own with 2 CPU threads (Ray's OMP_NUM_THREADS for
# cpus_per_trial 2), micro-batch 16 of real dialogues at max_length 512, all three on, all off, and
# each one off alone, by turns (benchmarks/gpu_sharing.py at the smollm2-135m shape, random weights). Each part's log and JSON go to
# /tmp/res as it ends, and nothing else does: the reply brings /tmp/res back whole, under its limit.
# The device chain (../shared/tools/README.md; ask `status` first: a session's 30 minutes count
# an earlier try's):
#   call 1  carry [".devbundle"]   bash .devbundle/unpack.sh   (the inputs beside it would pass 64 MiB:
#           benchmarks/slim_bundle.sh --check)
#   call 2  carry [".devstage/inputs.tar.xz"]
#           mkdir -p /tmp/stage && tar xJf .devstage/inputs.tar.xz -C /tmp/stage \
#             && bash /tmp/detach.sh 'bash benchmarks/trial_speed_chain.sh' && bash /tmp/wait.sh 540
#   call 3+ bash /tmp/wait.sh 540
set -u
for part in ${PARTS:-compile-cost}; do  # every part known before anything runs or is written
    case $part in compile-cost|1b|gpu-tests|8b|sharing|levers) ;;
        *) echo "unknown part $part (compile-cost, 1b, gpu-tests, 8b, sharing, levers)" >&2; exit 2 ;;
    esac
done
stage=${STAGE:-/tmp/stage}
res=${RES:-/tmp/res}
data=$stage/dialogsum
tokenizer=$stage/smollm2-135m-instruct-tokenizer
export MODEL_CACHE=${MODEL_CACHE:-/tmp/models}  # the 8B model built once for the 8B list and the sharing runs
mkdir -p "$res" "$MODEL_CACHE"
pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|bitsandbytes|liger|ray)" > "$res/versions.txt"
bash benchmarks/compile_bundle.sh "$res"  # as a pip install leaves packages: byte-compiled
compiled=attention=flex_attention,float32_dense_layers=false,compile_layers=true
kept=gradient_checkpointing=false  # as the benchmark's SmolLM2 trials ran: they keep their activations
levers=(--setting "on:liger_kernels=true,fused_lm_head=true,padding_free=true,$kept" --trials on=1,6
        --setting "off:liger_kernels=false,fused_lm_head=false,padding_free=false,$kept" --trials off=1,6
        --setting "no_liger:liger_kernels=false,fused_lm_head=true,padding_free=true,$kept" --trials no_liger=6
        --setting "no_fused:liger_kernels=true,fused_lm_head=false,padding_free=true,$kept" --trials no_fused=6
        --setting "no_padding_free:liger_kernels=true,fused_lm_head=true,padding_free=false,$kept"
        --trials no_padding_free=6)
cost=(--shape llama3.2-1b --data "$data" --tokenizer "$tokenizer" --model-cache "$MODEL_CACHE" --steps 5)
for part in ${PARTS:-compile-cost}; do
    case $part in
        compile-cost)  # cold, then warm (a later process, same machine); plain's 15.04 GB, then the whole GPU
            for run in cold warm; do
                TORCH_LOGS=recompiles python3 benchmarks/compile_cost.py "${cost[@]}" --setting $compiled \
                    --memory-budget-gb 15.04 --out "$res/compile_cost_1b_mb16_$run.json" > "$res/compile_cost_1b_mb16_$run.log" 2>&1
            done
            TORCH_LOGS=recompiles python3 benchmarks/compile_cost.py "${cost[@]}" --setting $compiled,micro_batch_size=32 \
                --out "$res/compile_cost_1b_mb32.json" > "$res/compile_cost_1b_mb32.log" 2>&1 ;;
        1b) SKIP_EVAL=1 OUT=$res ONLY=1b bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/job1b.log" 2>&1 ;;
        gpu-tests) python3 tests/tiny_model.py /tmp/tiny > /dev/null \
            && timeout 480 python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_gpu.py > "$res/gpu_tests.log" 2>&1 ;;
        8b) OUT=$res ONLY=8b bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/job8b.log" 2>&1 ;;
        levers) OMP_NUM_THREADS=2 python3 benchmarks/gpu_sharing.py --shape smollm2-135m --data "$data" \
            --tokenizer "$tokenizer" --model-cache "$MODEL_CACHE" --micro-batch-size 16 --max-length 512 --steps 15 \
            --segment-warmup 3 --rounds 4 --warmup-s 60 "${levers[@]}" --out "$res/levers_sharing.json" \
            > "$res/levers_sharing.log" 2>&1 ;;
        sharing) OUT=$res ONLY=sharing bash benchmarks/trial_speed.sh "$data" "$tokenizer" > "$res/sharing.log" 2>&1 ;;
    esac
    echo "$part: exit $?"
done
