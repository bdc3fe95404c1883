#!/usr/bin/env bash
# LoRA+ (search.loraplus_lr_ratio) on the GPU machine, qlora-sweep's arm only, both seeds a run, each run beside
# 2026-12-04-sweep-500's by hand and recipe (plain LoRA) and into its own folder, RES=/tmp/res/SIDE-K, so a job
# cut short brings back the runs that ended. Why (2026-12-06-loraplus's README, "Next"): ratio 16 on the plain
# space's rates (1e-4..1e-2) lifted the best above every plain run on both seeds, but 4 and 9 of 12 trials
# diverged (the survivors trained at lr x alpha/r 2e-4..7e-4), and one run a seed left open whether the test score
# follows. The sides, by turns, ROUNDS times:
#   r4    ratio 4 on the benchmark's own rates: the seeded searcher proposes the plain runs' values, so each trial
#         pairs with theirs (benchmarks/across_runs.py);
#   lr16  ratio 16 with the rates lowered to 2e-5..2e-3 (new values: compared by best and test score only).
# Run from the staged project after the chain header's calls 1-4 (the wheel in /tmp/smol.whl, the inputs in
# /tmp/stage), about 5 minutes a run after the first's 30 s of GPU warm-up:
#   bash /tmp/detach.sh 'bash benchmarks/loraplus_runs.sh'        # ROUNDS="1 2" SIDES="r4 lr16": ~20 minutes
#   bash /tmp/detach.sh 'ROUNDS=1 SIDES=r4 bash benchmarks/loraplus_runs.sh'   # one run, where little time is left
set -u
sets_for() {  # SIDE: its config overrides (the chain's SETS); no output and status 1 for an unknown side
  case $1 in
    r4) echo "search.loraplus_lr_ratio=4" ;;
    # no spaces in the value: the chain splits SETS on them
    lr16) echo 'search.loraplus_lr_ratio=16 search.learning_rate={"low":2.0e-5,"high":2.0e-3,"log":true}' ;;
    *) return 1 ;;
  esac
}
sides=${SIDES:-r4 lr16}
for side in $sides; do  # every side known before any run
  sets_for "$side" > /dev/null || { echo "loraplus_runs.sh: unknown side $side (r4, lr16)" >&2; exit 2; }
done
warmup=${WARMUP_S:-30}
for round in ${ROUNDS:-1 2}; do
  for side in $sides; do
    echo "=== $side, round $round: $(date -u +%T)"
    RES=/tmp/res/$side-$round WARMUP_S=$warmup SETS="$(sets_for "$side")" \
      RESUME_FROM=/tmp/proj/benchmarks/results/2026-12-04-sweep-500 SEED="0 1" RERUN=qlora_sweep RESCORE_PAIRS=0 \
      PARTS=sweep bash benchmarks/sweep_benchmark_chain.sh
    echo "=== $side, round $round: exit $?, $(date -u +%T)"
    warmup=0  # the GPU is warm after the first run
  done
done
