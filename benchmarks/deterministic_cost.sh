#!/usr/bin/env bash
# Where training.deterministic's cost goes (issue 11), a GPU job for the device chain, no extra staging (the
# SmolLM2-135M shape with random weights, the recipe's values):
#   call 1  carry [".devbundle"]   (the inputs beside it would pass 64 MiB: benchmarks/slim_bundle.sh --check)
#           bash .devbundle/unpack.sh > /dev/null && mkdir -p /tmp/res && bash benchmarks/compile_bundle.sh /tmp/res
#   call 2  carry [".devstage/inputs.tar.xz"]
#           mkdir -p /tmp/stage && tar xJf .devstage/inputs.tar.xz -C /tmp/stage \
#             && bash /tmp/detach.sh 'bash benchmarks/deterministic_cost.sh' && bash /tmp/wait.sh 480
#   call 3+ bash /tmp/wait.sh 540   (at once after each reply; about 11 minutes in all)
# Each part writes under /tmp/res as it ends, so a chain cut short keeps the parts before. PARTS picks them
# (default: fill-off workspace, in this order; about 11 minutes). TRIALS (first_rung's parts, in all: the first
# cold, then the sides by turns; default 5), WARMUP_S (the first part's GPU warm-up, default 60) and ROUNDS
# (workspace's, default 2) shrink them.
#   fill-off      benchmarks/first_rung.py's A/B in one process, default trials and deterministic ones by turns
#                 after a cold default one, deterministic without torch's fill of new memory. Run 2026-12-05,
#                 when a deterministic trial left CUBLAS_WORKSPACE_CONFIG set and the default trials after it
#                 ran 0.31-0.36 s a step against the cold one's 0.21-0.25 s; since b062bac the switch takes it
#                 back: are they back at the cold trial's step, and what does a deterministic step cost then?
#                 (Run 2026-12-06 at 4c60455: back, 0.383 s against the cold trial's 0.415 s; deterministic 0.84x.)
#   workspace     every trial default, one process per cuBLAS setting, by turns: none, :4096:8 (what a
#                 deterministic trial sets), :16:8 (the other value torch accepts for determinism), ROUNDS
#                 times, 2 trials each (cold, warm). :4096:8 alone slowed steps to 0.77x in host time
#                 (results/2026-12-06-cublas-workspace): does :16:8 cost less? (Run 2026-12-06: no, 0.72x against
#                 :4096:8's 0.82x; results/2026-12-06-fill-off-workspace.)
#   warm-default  every trial default, one process: warm trials against the cold one (run 2026-12-06: the same).
#   warm-default-cublas  the same with CUBLAS_WORKSPACE_CONFIG=:4096:8 from the start (run 2026-12-06: 0.77x).
#   pace          benchmarks/shared_determinism.py: sweeps of 6 trials at once (fresh processes), default and
#                 deterministic by turns, 2 rounds (run 2026-12-06 without the fill: 0.90x).
#   compiled      the same with compiled layers (run 2026-12-06: 0.71x on a warm compile cache).
#   fill-on       first_rung's A/B with torch's fill (run 2026-12-05: 0.90x, against slowed defaults).
set -uo pipefail
PARTS=${PARTS:-"fill-off workspace"}
mkdir -p /tmp/res
python3 -c "import sys; from pathlib import Path; sys.path[:0]=['benchmarks','.']; from trial_speed import build_random_model; build_random_model('smollm2-135m','/tmp/stage/smollm2-135m-instruct-tokenizer',Path('/tmp/random-smollm2'))"
SETS=(--set data.path=/tmp/stage/dialogsum --set model.name_or_path=/tmp/random-smollm2 --set scheduler.max_rungs=2
      --set data.max_validation_examples=32 --set evaluation.rung_examples=all --set evaluation.max_new_tokens=8)
FIRST_RUNG=(python3 benchmarks/first_rung.py configs/sweep_benchmark_gpu.yaml --profile-steps 30)
trials=${TRIALS:-5}  # the A/B parts' (workspace's processes run 2 each)
SWEEPS=(python3 benchmarks/shared_determinism.py configs/sweep_benchmark_gpu.yaml --runs 2)
warmup=${WARMUP_S:-60}  # the first part warms the GPU up; the later ones find it warm
for part in $PARTS; do
  began=$SECONDS
  case $part in
    warm-default)
      "${FIRST_RUNG[@]}" --trials "$trials" --out /tmp/res/warm-default.json --warmup-s "$warmup" "${SETS[@]}" \
          > /tmp/res/warm-default.log 2>&1 ;;
    warm-default-cublas)
      CUBLAS_WORKSPACE_CONFIG=:4096:8 "${FIRST_RUNG[@]}" --trials "$trials" --out /tmp/res/warm-default-cublas.json \
          --warmup-s "$warmup" "${SETS[@]}" > /tmp/res/warm-default-cublas.log 2>&1 ;;
    fill-on)
      "${FIRST_RUNG[@]}" --trials "$trials" --out /tmp/res/fill-on.json --warmup-s "$warmup" \
          --candidate training.deterministic=true --candidate training.fill_uninitialized_memory=true "${SETS[@]}" \
          > /tmp/res/fill-on.log 2>&1 ;;
    fill-off)
      "${FIRST_RUNG[@]}" --trials "$trials" --out /tmp/res/fill-off.json --warmup-s "$warmup" \
          --candidate training.deterministic=true "${SETS[@]}" > /tmp/res/fill-off.log 2>&1 ;;
    workspace)
      mkdir -p /tmp/res/workspace
      for round in $(seq "${ROUNDS:-2}"); do
        for setting in none :4096:8 :16:8; do
          label=${setting#:}
          name=workspace/${label//:/-}-r$round  # none-r1, 4096-8-r1, 16-8-r1, ...
          ( [ "$setting" = none ] || export CUBLAS_WORKSPACE_CONFIG=$setting
            "${FIRST_RUNG[@]}" --trials 2 --out "/tmp/res/$name.json" --warmup-s "$warmup" "${SETS[@]}" \
              > "/tmp/res/$name.log" 2>&1 )
          echo "  $name exit $?"
          warmup=15
        done
      done ;;
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
