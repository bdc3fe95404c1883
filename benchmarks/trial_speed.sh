#!/usr/bin/env bash
# Issue 10's measurements on one GPU, JSON into $OUT (default benchmarks/results/): the Llama-3-8B
# and Llama-3.2-1B shapes, each side against the plain recipe by the warm-up-and-alternate protocol
# of benchmarks/trial_speed.py, with a profile of every side; with QUALITY=1, also the ROUGE-L check
# on SmolLM2 with two seeds (it needs SmolLM2's real weights). ONLY=8b, 1b or quality runs one part.
# Run from the repo root:
#   benchmarks/trial_speed.sh /path/to/dialogsum /path/to/SmolLM2-folder-or-tokenizer
# MODEL_CACHE=DIR keeps the random-weight models there for a later run.
set -euo pipefail
data=${1:?path to a DialogSum folder (train.jsonl, validation.jsonl)}
smollm2=${2:?path to SmolLM2-135M-Instruct (a model folder from qlora-sweep fetch-model, or its tokenizer)}
out=${OUT:-benchmarks/results}
only=${ONLY:-}
cache=(${MODEL_CACHE:+--model-cache "$MODEL_CACHE"})
whole_gpu=micro_batch_size=16,memory_budget_gb=null
mkdir -p "$out"
if [ -z "$only" ] || [ "$only" = 8b ]; then
    # Eight sides, three rounds (the 2026-12-02 third run of seven sides and four rounds took 15 min):
    # plain, the defaults at equal memory and on one GPU; at equal memory, bf16 dense layers with
    # compiled layers recomputed by the compiler keeping none of the recomputable activations (SDPA,
    # mb 8: 1.77x in that run), then with FlexAttention (attention within each example only, so its
    # cost grows with the micro-batch, not its square) at micro-batches 8 and 16, each keeping the
    # share of activations that run's peaks say fits plain's 17.5 GB (own peak about 6.8 GB + 0.22 GB
    # an example recomputing, + 1.9 GB an example per whole share kept: 0.5 and 0.2), and packed
    # (training.packing: micro-batches of 8 x 512 tokens, where unpacked ones held about 55 % of that)
    # with the share the planner fits (auto: its estimate assumes full micro-batches, which packing
    # makes true); on one GPU FlexAttention with compiled layers without recompute (3.19x in that
    # run; packed at mb 16, 8,192 tokens, it would need about 72 GB beside the 60-70 GB the other
    # sides keep resident: more than the card holds, by estimate). A side counts as equal memory
    # only if its measured own peak is within plain's. Every compiled model compiles its own code (a
    # backend each: dynamo does not guard on the recompute). Every trial side's Trainer should now wait for the GPU at 6 points a step where that
    # run's waited at 17 (87ca0de; the profiled sides' syncs_per_step will say), so the defaults'
    # figures may differ from that run's for that reason too. ROUGE on all 500 dialogues for the
    # one-GPU defaults (merged copy, fixed batches: 49.0 s in that run; compiled decoding is not
    # timed again). The profile covers the packed equal-memory side and the one-GPU compiled side.
    compiled="float32_dense_layers=false,compile_layers=true"
    flex_compiled="attention=flex_attention,$compiled"
    python3 benchmarks/trial_speed.py --shape llama3-8b --data "$data" --tokenizer "$smollm2" "${cache[@]}" \
        --out "$out/trial_speed_llama3-8b.json" --rounds 3 --profile-steps 3 ${SKIP_EVAL:+--skip-eval} \
        --eval-examples 500 --eval-side one_gpu \
        --variant "$compiled,activations_kept=0" \
        --variant "$flex_compiled,activations_kept=0.5" \
        --variant "$flex_compiled,micro_batch_size=16,activations_kept=0.2" \
        --variant "$flex_compiled,packing=true" \
        --variant "$flex_compiled,$whole_gpu" \
        --profile-side "variant $flex_compiled,packing=true" \
        --profile-side "variant $flex_compiled,$whole_gpu"
fi
if [ -z "$only" ] || [ "$only" = 1b ]; then
    # The 2026-12-02 run had no Flex or compiled side, and SDPA's dense mask was 30-47 % of its kernels.
    compiled="float32_dense_layers=false,compile_layers=true"
    python3 benchmarks/trial_speed.py --shape llama3.2-1b --data "$data" --tokenizer "$smollm2" "${cache[@]}" \
        --out "$out/trial_speed_llama3.2-1b.json" --micro-batch-size 16 --one-gpu-micro-batch-size 32 \
        --profile-steps 3 ${SKIP_EVAL:+--skip-eval} --variant liger_kernels=true \
        --variant attention=flex_attention \
        --variant "attention=flex_attention,$compiled" \
        --variant "attention=flex_attention,$compiled,micro_batch_size=32,memory_budget_gb=null" \
        --profile-side qlora_sweep --profile-side "variant attention=flex_attention,$compiled"
fi
if [ "${QUALITY:-0}" = 1 ] || [ "$only" = quality ]; then
    python3 benchmarks/trial_speed.py --quality-only --data "$data" --tokenizer "$smollm2" \
        --out "$out/trial_speed_quality.json" --quality-model "$smollm2" --quality-seeds 0 1 \
        --quality-steps 60 --micro-batch-size 16 --quality-variant float32_dense_layers=false \
        --quality-variant float32_dense_layers=false,compile_layers=true \
        --quality-variant attention=flex_attention,float32_dense_layers=false,compile_layers=true,gradient_checkpointing=true,activations_kept=0.2 \
        --quality-variant packing=true --quality-variant liger_kernels=true
fi
