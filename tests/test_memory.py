"""The one memory planner (trainables.memory), as arithmetic on a model's shape: recompute only when
a micro-batch would not fit, a merged copy only where it fits beside 32 sequences, a generation
batch sized to the memory left, and on CPU the choices that suit a CPU."""

import math
import os

import pytest

from tests.helpers import fake_nvidia_smi
from trainables.config import (
    DataConfig,
    EvaluationConfig,
    MemoryPlan,
    ModelConfig,
    PromptConfig,
    TrainingConfig,
    TrialConfig,
    TrialHyperparameters,
)
from trainables import memory
from trainables.errors import ConfigError
from trainables.memory import (
    CPU_GENERATION_BATCH,
    GIB,
    HEADROOM_BYTES,
    MAX_GENERATION_BATCH,
    MIN_MERGED_BATCH,
    GpuRequest,
    activation_bytes_per_token,
    dense_copy_bytes,
    generation_bytes_per_sequence,
    lora_bytes,
    plan_memory,
    weight_bytes,
)

pytestmark = pytest.mark.unit

LLAMA_3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
MODEL = ModelConfig(name_or_path="/models/llama-3-8b", compute_dtype="bfloat16")
HP = TrialHyperparameters(lora_r=16, lora_alpha=16, learning_rate=1e-4, max_length=512, lora_dropout=0.0,
                          target_modules="all-linear")


def _plan(budget_gb=None, training=TrainingConfig(micro_batch_size=8), evaluation=EvaluationConfig(),
          gpus_per_trial=1, gpu_gb=80):
    gpu = GpuRequest(gpu_gb * GIB, gpus_per_trial, budget_gb * GIB if budget_gb else None)
    return plan_memory(LLAMA_3_8B, MODEL, training, evaluation, HP, gpu)


def test_recompute_costs_far_less_memory_per_token_than_keeping_activations():
    kept = activation_bytes_per_token(LLAMA_3_8B, gradient_checkpointing=False)
    recomputed = activation_bytes_per_token(LLAMA_3_8B, gradient_checkpointing=True)
    assert 5e6 < kept < 12e6  # several MB per token on the 8B shape
    assert recomputed < kept / 10


def test_auto_checkpointing_turns_on_only_when_the_micro_batch_does_not_fit():
    assert _plan(budget_gb=80).gradient_checkpointing is False
    assert _plan(budget_gb=16).gradient_checkpointing is True
    assert _plan(gpus_per_trial=0.25).gradient_checkpointing is True  # a quarter of 80 GB is 20 GB
    cpu = plan_memory(None, MODEL, TrainingConfig(), EvaluationConfig(), HP, None)
    assert cpu.gradient_checkpointing is False and cpu.memory_budget_gb is None and cpu.gpu_share == 0


def test_an_explicit_setting_is_kept_whatever_the_memory():
    assert _plan(budget_gb=80, training=TrainingConfig(gradient_checkpointing=True)).gradient_checkpointing is True
    assert _plan(budget_gb=1, training=TrainingConfig(gradient_checkpointing=False)).gradient_checkpointing is False
    fixed = EvaluationConfig(batch_size=7, merged_copy=False)
    assert (_plan(budget_gb=80, evaluation=fixed).generation_batch_size, _plan(evaluation=fixed).merged_copy) == (7, False)
    assert _plan(training=TrainingConfig(fused_lm_head=False)).fused_lm_head is False


def test_the_generation_batch_fills_half_the_memory_left_and_stays_within_bounds():
    no_copy = EvaluationConfig(max_new_tokens=96, merged_copy=False)
    float32_dense = TrainingConfig(micro_batch_size=8, float32_dense_layers=True)
    small, large = (_plan(budget_gb=16, training=float32_dense, evaluation=no_copy),
                    _plan(budget_gb=40, training=float32_dense, evaluation=no_copy))
    assert 1 <= small.generation_batch_size < large.generation_batch_size <= MAX_GENERATION_BATCH
    # Beside the prepared weights (dense parts float32) and LoRA state, and the bf16 copies of the
    # dense parts that generation uses, the cache is bf16 (trainables.model.generating_in_compute_dtype).
    dense = (weight_bytes(LLAMA_3_8B, 4) - weight_bytes(LLAMA_3_8B, 2)) / 2  # the dense parameters' count
    left = (16 * GIB - weight_bytes(LLAMA_3_8B, 4) - lora_bytes(LLAMA_3_8B, HP) - HEADROOM_BYTES - 2 * dense)
    per_sequence = generation_bytes_per_sequence(LLAMA_3_8B, HP, no_copy, value_bytes=2)
    assert small.generation_batch_size == int(left / 2 / per_sequence)
    cpu = plan_memory(None, MODEL, TrainingConfig(), EvaluationConfig(), HP, None)
    assert cpu.generation_batch_size == CPU_GENERATION_BATCH


def test_auto_uses_the_merged_copy_only_where_it_fits_beside_32_sequences():
    through_copy = generation_bytes_per_sequence(LLAMA_3_8B, HP, EvaluationConfig(), value_bytes=2)
    resident = weight_bytes(LLAMA_3_8B, 4) + lora_bytes(LLAMA_3_8B, HP) + HEADROOM_BYTES
    just_enough = (resident + dense_copy_bytes(LLAMA_3_8B, 2) + 2 * MIN_MERGED_BATCH * through_copy) / GIB
    float32_dense = TrainingConfig(micro_batch_size=8, float32_dense_layers=True)
    fits = _plan(budget_gb=just_enough, training=float32_dense)
    assert fits.merged_copy is True and fits.generation_batch_size == MIN_MERGED_BATCH
    assert _plan(budget_gb=just_enough - 2 * through_copy / GIB, training=float32_dense).merged_copy is False
    assert plan_memory(None, MODEL, TrainingConfig(), EvaluationConfig(), HP, None).merged_copy is False  # CPU
    assert 14 * GIB < dense_copy_bytes(LLAMA_3_8B, 2) < 16 * GIB  # an 8B model in bf16: 16 GB


def test_the_fused_lm_head_is_the_gpu_default_and_full_logits_the_cpu_one():
    assert _plan().fused_lm_head is True
    assert plan_memory(None, MODEL, TrainingConfig(), EvaluationConfig(), HP, None).fused_lm_head is False


def test_liger_kernels_run_where_installed_for_trials_without_recompute_and_asking_without_them_is_refused(monkeypatch):
    cpu = lambda liger: plan_memory(None, MODEL, TrainingConfig(liger_kernels=liger), EvaluationConfig(), HP, None)  # noqa: E731
    assert cpu("auto").liger_kernels is False and cpu(False).liger_kernels is False
    with pytest.raises(ConfigError, match=r"^training.liger_kernels: true needs GPU trials"):
        cpu(True)

    monkeypatch.setattr(memory, "liger_installed", lambda: False)
    assert _plan(training=TrainingConfig(liger_kernels="auto")).liger_kernels is False
    with pytest.raises(ConfigError, match=r"^training.liger_kernels: true, but liger-kernel is not installed"):
        _plan(training=TrainingConfig(liger_kernels=True))
    monkeypatch.setattr(memory, "liger_installed", lambda: True)
    assert _plan(training=TrainingConfig(liger_kernels=True)).liger_kernels is True
    assert _plan(training=TrainingConfig(liger_kernels=False)).liger_kernels is False
    roomy, tight = _plan(training=TrainingConfig(liger_kernels="auto")), _plan(budget_gb=16, training=TrainingConfig(
        liger_kernels="auto"))
    assert (roomy.gradient_checkpointing, roomy.liger_kernels) == (False, True)  # faster where nothing is recomputed
    assert (tight.gradient_checkpointing, tight.liger_kernels) == (True, False)  # slower beside recompute
    trial = TrialConfig.planned(MODEL, DataConfig(), PromptConfig(), TrainingConfig(liger_kernels=True),
                                EvaluationConfig(), 3, HP, _plan(training=TrainingConfig(liger_kernels=True)),
                                ranked_by="rougeL")
    assert trial.training.liger_kernels is True


def test_compiled_layers_turn_liger_off_and_asking_for_both_is_refused(monkeypatch):
    monkeypatch.setattr(memory, "liger_installed", lambda: True)
    # Where Liger would be on (the activations kept), compiled layers decide it off
    assert _plan(training=TrainingConfig(liger_kernels="auto")).liger_kernels is True
    compiled = _plan(training=TrainingConfig(liger_kernels="auto", compile_layers=True))
    assert (compiled.gradient_checkpointing, compiled.liger_kernels) == (False, False)
    with pytest.raises(ConfigError, match=r"^training.liger_kernels: true with training.compile_layers: true"):
        _plan(training=TrainingConfig(liger_kernels=True, compile_layers=True))


def test_compiled_layers_keep_the_largest_tenth_of_their_activations_the_memory_holds():
    """Where a compiled trial recomputes, what memory is left beside the recomputing micro-batch
    keeps part of its activations instead (torch's activation memory budget): the largest tenth
    whose predicted peak fits, so more memory keeps more and nothing kept overruns the budget."""
    compiled = TrainingConfig(micro_batch_size=8, compile_layers=True, float32_dense_layers=False)
    plans = {budget: _plan(budget_gb=budget, training=compiled) for budget in (14, 16, 18, 22)}
    assert all(plan.gradient_checkpointing for plan in plans.values())
    kept = [plans[budget].activations_kept for budget in (14, 16, 18, 22)]
    assert kept == sorted(kept) and kept[0] < kept[-1] < 1 and kept[-1] > 0
    for budget, plan in plans.items():
        assert plan.predicted_peak_gb <= budget
        if plan.activations_kept < 0.9:  # a tenth more would not have fitted
            more = memory.predicted_peak_bytes(LLAMA_3_8B, HP, compiled, True, 2, plan.activations_kept + 0.1)
            assert more > budget * GIB, budget
    # The same memory, eager layers: a checkpoint recomputes whole layers, nothing partly kept
    assert _plan(budget_gb=22, training=TrainingConfig(micro_batch_size=8, float32_dense_layers=False)
                 ).activations_kept == 0.0
    # Trials packed by memory keep none: what they kept would ask for a larger share, fewer at once
    packed = _plan(gpus_per_trial="auto", training=compiled.model_copy(update={"gradient_checkpointing": True}))
    assert (packed.gradient_checkpointing, packed.activations_kept) == (True, 0.0) and packed.gpu_share < 0.2
    # Nothing recomputed: everything kept; a share that was asked for is kept as asked
    assert _plan(budget_gb=80, training=compiled).activations_kept == 1.0
    asked = compiled.model_copy(update={"activations_kept": 0.3})
    assert _plan(budget_gb=16, training=asked).activations_kept == 0.3
    trial = TrialConfig.planned(MODEL, DataConfig(), PromptConfig(), compiled, EvaluationConfig(), 3, HP, plans[18],
                                ranked_by="rougeL")
    assert trial.training.activations_kept == plans[18].activations_kept


def test_a_share_of_activations_kept_is_refused_for_eager_layers_and_outside_0_to_1():
    with pytest.raises(ConfigError, match=r"^training.activations_kept: 0.5 applies to compiled layers"):
        _plan(budget_gb=16, training=TrainingConfig(activations_kept=0.5))
    with pytest.raises(ConfigError, match=r"^training.activations_kept: 0.5 applies to compiled layers"):
        plan_memory(None, MODEL, TrainingConfig(activations_kept=0.5), EvaluationConfig(), HP, None)  # CPU too
    for wrong in (1.5, -0.1, "half", True):
        with pytest.raises(ValueError, match="must be auto or a number from 0 to 1"):
            TrainingConfig(activations_kept=wrong)
    assert TrainingConfig(activations_kept=1).activations_kept == 1.0


def test_packing_is_refused_for_padded_micro_batches_before_any_trial_starts():
    padded = TrainingConfig(packing=True, padding_free=False)
    for shape, gpu in ((LLAMA_3_8B, GpuRequest(80 * GIB, 1)), (None, None)):  # on a GPU and on CPUs alike
        with pytest.raises(ConfigError, match=r"^training.packing: true packs examples into padding-free rows"):
            plan_memory(shape, MODEL, padded, EvaluationConfig(), HP, gpu)
    assert plan_memory(None, MODEL, TrainingConfig(packing=True), EvaluationConfig(), HP, None).micro_batch_size == 4


def test_a_trial_is_given_its_sections_with_the_plans_decisions_and_never_an_auto():
    plan = _plan(budget_gb=16)
    trial = TrialConfig.planned(MODEL, DataConfig(), PromptConfig(), TrainingConfig(), EvaluationConfig(), 3, HP, plan,
                                ranked_by="rougeL")
    assert trial.training.gradient_checkpointing is plan.gradient_checkpointing is True
    assert (trial.evaluation.batch_size, trial.evaluation.merged_copy) == (plan.generation_batch_size, plan.merged_copy)
    assert trial.total_steps == 3 * TrainingConfig().steps_per_rung
    assert trial.evaluation.loss_examples == "first_rung"  # ROUGE ranks: the loss on rung 1's dialogues
    assert (trial.training.compile_layers, trial.training.float32_dense_layers, trial.training.padding_free,
            trial.model.attention) == (plan.compile_layers, plan.float32_dense_layers, plan.padding_free, plan.attention)
    with pytest.raises(ValueError, match="training.gradient_checkpointing, training.activations_kept, "
                                         "training.fused_lm_head, training.liger_kernels, training.compile_layers, "
                                         "training.float32_dense_layers, training.padding_free, model.attention, "
                                         "evaluation.merged_copy, evaluation.loss_examples, evaluation.batch_size"):
        TrialConfig(model=MODEL, data=DataConfig(), prompt=PromptConfig(), training=TrainingConfig(),
                    evaluation=EvaluationConfig(), max_rungs=3, hyperparameters=HP, plan=plan)
    assert isinstance(trial.plan, MemoryPlan)


def test_dense_layers_kept_in_bf16_are_planned_at_2_bytes_and_need_no_copy_to_generate():
    through_the_model = EvaluationConfig(merged_copy=False)
    kept = _plan(budget_gb=16, training=TrainingConfig(micro_batch_size=8, float32_dense_layers=True),
                 evaluation=through_the_model)
    bf16 = _plan(budget_gb=16, training=TrainingConfig(micro_batch_size=8, float32_dense_layers=False),
                 evaluation=through_the_model)
    dense_saving = weight_bytes(LLAMA_3_8B, 4) - weight_bytes(LLAMA_3_8B, 2)  # 2 bytes per dense weight
    assert (kept.predicted_peak_gb - bf16.predicted_peak_gb) * GIB == pytest.approx(dense_saving)
    assert 1.5 * GIB < dense_saving < 2.5 * GIB  # Llama-3-8B's embeddings and LM head: about 2 GB
    # Generation gets half of what is freed: the weights' saving, and the bf16 copies of the float32
    # layers it no longer makes (the same 2 bytes per dense weight)
    per_sequence = generation_bytes_per_sequence(LLAMA_3_8B, HP, through_the_model, 2)
    assert bf16.generation_batch_size - kept.generation_batch_size == pytest.approx(
        (dense_saving + dense_saving) / 2 / per_sequence, abs=1)


def test_a_trial_with_memory_of_its_own_trains_its_effective_batch_in_as_few_micro_batches_as_fit():
    """grow_micro_batch: 4 micro-batches of 4 become one of 16 where it fits, recomputing rather
    than keeping 4 (the host's cost is per micro-batch), and keep the activations too where even
    that fits; the effective batch never changes, and only divisors of it are tried."""
    recipe = TrainingConfig(micro_batch_size=4, gradient_accumulation_steps=4)
    roomy, tight, tiny = _plan(budget_gb=80, training=recipe), _plan(budget_gb=40, training=recipe), \
        _plan(budget_gb=8, training=recipe)
    assert (roomy.micro_batch_size, roomy.gradient_accumulation_steps, roomy.gradient_checkpointing) == (16, 1, False)
    assert (tight.micro_batch_size, tight.gradient_accumulation_steps, tight.gradient_checkpointing) == (16, 1, True)
    assert tight.predicted_peak_gb <= 40
    assert (tiny.micro_batch_size, tiny.gradient_accumulation_steps, tiny.gradient_checkpointing) == (4, 4, True)
    # Without recompute in 40 GB only the configured micro-batch fits: the larger one with recompute won
    kept = memory.predicted_peak_bytes(LLAMA_3_8B, HP, recipe, False, 2)
    assert kept <= 40 * GIB < memory.predicted_peak_bytes(
        LLAMA_3_8B, HP, recipe.model_copy(update={"micro_batch_size": 8, "gradient_accumulation_steps": 2}), False, 2)
    twelve = _plan(budget_gb=40, training=TrainingConfig(micro_batch_size=3, gradient_accumulation_steps=4,
                                                         gradient_checkpointing=True))
    assert twelve.micro_batch_size in (3, 4, 6, 12) and twelve.micro_batch_size * twelve.gradient_accumulation_steps == 12
    assert twelve.gradient_checkpointing is True  # an explicit setting is kept
    decided = twelve.decide_training(TrainingConfig(micro_batch_size=3, gradient_accumulation_steps=4))
    assert (decided.micro_batch_size, decided.gradient_accumulation_steps) == (
        twelve.micro_batch_size, twelve.gradient_accumulation_steps)


def test_trials_packed_by_memory_and_trials_told_not_to_keep_their_micro_batch():
    recipe = TrainingConfig(micro_batch_size=4, gradient_accumulation_steps=4)
    packed = _plan(training=recipe, gpus_per_trial="auto")
    assert (packed.micro_batch_size, packed.gradient_accumulation_steps) == (4, 4)  # a larger one: fewer trials at once
    budgeted = _plan(budget_gb=24, training=recipe, gpus_per_trial="auto")  # resources.gpu_memory_gb: its own memory
    assert (budgeted.micro_batch_size, budgeted.gradient_accumulation_steps) == (16, 1)
    told = _plan(budget_gb=80, training=recipe.model_copy(update={"grow_micro_batch": False}))
    assert (told.micro_batch_size, told.gradient_accumulation_steps, told.gradient_checkpointing) == (4, 4, False)
    cpu = plan_memory(None, MODEL, recipe, EvaluationConfig(), HP, None)
    assert (cpu.micro_batch_size, cpu.gradient_accumulation_steps) == (4, 4)
    with pytest.raises(ConfigError, match=r"^training.grow_micro_batch: true sizes micro-batches to a GPU trial"):
        plan_memory(None, MODEL, recipe.model_copy(update={"grow_micro_batch": True}), EvaluationConfig(), HP, None)


SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)


def test_padding_free_rows_where_flex_attention_or_a_large_models_linear_layers_outweigh_sdpas_dense_mask():
    """padding_free: auto: SDPA attends over a padding-free micro-batch with a dense mask of its tokens
    squared; padded micro-batches where that attention would outweigh the layers' linear FLOPs (the
    SmolLM2 trials measured 1.32x faster padded, the 8B shape 1.12x faster padding-free), padding-free
    wherever FlexAttention masks each example itself, where packing needs it, and on CPU."""
    gpu = GpuRequest(80 * GIB, "auto")

    def plan(shape, training, steps=60, model=MODEL):
        return plan_memory(shape, model, training, EvaluationConfig(), HP, gpu, steps)

    # the measured trials: SmolLM2 at 16 x 512 tokens (ratio 2.7), the 8B shape at 8 x 512 (0.15)
    assert memory.dense_mask_attention_ratio(SMOLLM2, 16 * 512) == pytest.approx(2.67, abs=0.01)
    assert memory.dense_mask_attention_ratio(LLAMA_3_8B, 8 * 512) == pytest.approx(0.154, abs=0.001)
    small = plan(SMOLLM2, TrainingConfig(micro_batch_size=16))
    assert (small.padding_free, small.attention, small.compile_layers) == (False, "sdpa", False)
    large = plan(LLAMA_3_8B, TrainingConfig(micro_batch_size=8), steps=20)  # eager: too short to compile
    assert (large.padding_free, large.attention, large.compile_layers) == (True, "sdpa", False)
    # the threshold is the ratio 1: SmolLM2's micro-batch of 3 x 512 tokens is 0.5, 7 x 512 is 1.17
    assert plan(SMOLLM2, TrainingConfig(micro_batch_size=3)).padding_free is True
    assert plan(SMOLLM2, TrainingConfig(micro_batch_size=7)).padding_free is False
    # FlexAttention's document mask: compiled layers stay padding-free, even for the small model
    compiled = plan(SMOLLM2, TrainingConfig(micro_batch_size=16, compile_layers=True))
    assert (compiled.padding_free, compiled.attention) == (True, "flex_attention")
    told_sdpa = plan(SMOLLM2, TrainingConfig(micro_batch_size=16, compile_layers=True),
                     model=MODEL.model_copy(update={"attention": "sdpa"}))
    assert (told_sdpa.padding_free, told_sdpa.attention) == (False, "sdpa")
    assert plan(SMOLLM2, TrainingConfig(micro_batch_size=16, packing=True)).padding_free is True  # packing's rows
    asked = plan(SMOLLM2, TrainingConfig(micro_batch_size=16, padding_free=True))
    assert asked.padding_free is True  # what was asked for is kept
    cpu = plan_memory(None, MODEL, TrainingConfig(micro_batch_size=16), EvaluationConfig(), HP, None)
    assert cpu.padding_free is True
    trial = TrialConfig.planned(MODEL, DataConfig(), PromptConfig(), TrainingConfig(micro_batch_size=16),
                                EvaluationConfig(), 3, HP, small, ranked_by="rougeL")
    assert trial.training.padding_free is False  # the trial trains as planned
    # a plan stored before the field (a resumed experiment) trained padding-free, and still does
    stored = small.model_dump()
    del stored["padding_free"]
    assert MemoryPlan(**stored).padding_free is True


def _steps_for_eager_seconds(shape, training, seconds):
    """The whole-trial steps whose eager training the planner predicts at `seconds`."""
    one_step = memory.eager_training_seconds(shape, training, HP, total_steps=1)
    return seconds / one_step


def test_dense_layers_stay_bf16_where_the_compute_is_bf16_and_float32_otherwise():
    """float32_dense_layers: auto is off in bf16 (measured faster, ROUGE-L within 0.22 points), on in
    float16 (its narrow range) and in float32 (nothing to cast: peft's own preparation)."""
    gpu = GpuRequest(80 * GIB, 1)
    for dtype, kept in (("bfloat16", False), ("float16", True), ("float32", True)):
        model = ModelConfig(name_or_path="/m", compute_dtype=dtype)
        assert plan_memory(LLAMA_3_8B, model, TrainingConfig(), EvaluationConfig(), HP, gpu).float32_dense_layers is kept
    cpu = plan_memory(None, ModelConfig(name_or_path="/m"), TrainingConfig(), EvaluationConfig(), HP, None)
    assert cpu.float32_dense_layers is True  # a CPU computes in float32
    assert _plan(training=TrainingConfig(float32_dense_layers=True)).float32_dense_layers is True  # as asked
    # The plan's memory follows the decision: the auto plan is the bf16 one, 2 bytes a dense weight less
    auto, float32 = _plan(budget_gb=16), _plan(budget_gb=16, training=TrainingConfig(micro_batch_size=8,
                                                                                    float32_dense_layers=True))
    assert (float32.predicted_peak_gb - auto.predicted_peak_gb) * GIB == pytest.approx(
        weight_bytes(LLAMA_3_8B, 4) - weight_bytes(LLAMA_3_8B, 2))


def test_layers_compile_where_eager_training_would_outlast_what_a_compile_costs_and_bring_flex_attention(
        monkeypatch):
    """compile_layers: auto weighs the whole trial's eager training (every example at max_length, at
    the fastest eager pace measured) against the worst compile measured: on from 240 s, with
    FlexAttention for padding-free micro-batches; off below it, on CPU and for a trial of unknown length."""
    recipe = TrainingConfig(micro_batch_size=4, gradient_accumulation_steps=4)
    gpu = GpuRequest(80 * GIB, 1)

    def plan(shape=LLAMA_3_8B, training=recipe, steps=300, request=gpu):
        return plan_memory(shape, MODEL, training, EvaluationConfig(), HP, request, steps)

    # configs/llama3_8b_dialogsum.yaml's trial: 6 rungs of 50 steps of 16 examples, about 385 s eager
    # (the fastest eager pace measured, 6,935 tokens/s on the 8B shape, gives 355 s)
    assert 2.46e6 / 6935 < memory.eager_training_seconds(LLAMA_3_8B, recipe, HP, 300) < 420
    long = plan()
    assert (long.compile_layers, long.attention, long.liger_kernels) == (True, "flex_attention", False)
    at = _steps_for_eager_seconds(LLAMA_3_8B, recipe, memory.COMPILE_REPAID_AFTER_S)
    assert plan(steps=math.ceil(at)).compile_layers is True and plan(steps=math.floor(at)).compile_layers is False
    short = plan(steps=20)  # one rung of 20 steps: about 26 s eager
    assert (short.compile_layers, short.attention) == (False, "sdpa")
    assert plan(shape=SMOLLM2).compile_layers is False  # SmolLM2: seconds of eager training
    assert plan(steps=None).compile_layers is False
    cpu = plan_memory(None, MODEL, recipe, EvaluationConfig(), HP, None, 10**6)
    assert (cpu.compile_layers, cpu.attention) == (False, "sdpa")
    told = plan_memory(None, MODEL, recipe.model_copy(update={"compile_layers": True}), EvaluationConfig(), HP, None)
    assert (told.compile_layers, told.attention) == (True, "sdpa")  # torch has no FlexAttention backward on CPU
    # Padded micro-batches compile, and keep SDPA: a padded batch has no documents to mask
    padded = plan(training=recipe.model_copy(update={"padding_free": False}))
    assert (padded.compile_layers, padded.attention) == (True, "sdpa")
    # What was asked for is kept: either switch, an attention kernel, Liger (which compiled layers cannot trace)
    assert plan(training=recipe.model_copy(update={"compile_layers": False})).compile_layers is False
    assert plan(steps=20, training=recipe.model_copy(update={"compile_layers": True})).attention == "flex_attention"
    sdpa = plan_memory(LLAMA_3_8B, MODEL.model_copy(update={"attention": "sdpa"}), recipe, EvaluationConfig(), HP,
                       gpu, 300)
    assert (sdpa.compile_layers, sdpa.attention) == (True, "sdpa")
    monkeypatch.setattr(memory, "liger_installed", lambda: True)
    liger = plan(training=recipe.model_copy(update={"liger_kernels": True}))
    assert (liger.compile_layers, liger.liger_kernels) == (False, True)


def test_a_share_of_activations_kept_for_layers_auto_left_eager_is_refused_naming_the_switch():
    asked = TrainingConfig(micro_batch_size=8, activations_kept=0.4)
    with pytest.raises(ConfigError, match=r"^training.activations_kept: 0.4 applies to compiled layers.*"
                                          r"set training.compile_layers: true"):
        plan_memory(LLAMA_3_8B, MODEL, asked, EvaluationConfig(), HP, GpuRequest(80 * GIB, 1, 16 * GIB), 20)
    kept = plan_memory(LLAMA_3_8B, MODEL, asked, EvaluationConfig(), HP, GpuRequest(80 * GIB, 1, 16 * GIB), 600)
    assert (kept.compile_layers, kept.activations_kept) == (True, 0.4)


def test_cudnn_attention_is_planned_once_and_reaches_the_trials_model_config():
    """model.cudnn_attention: what was asked for is kept, on GPU and CPU; auto is off (cuDNN's graphs per
    shape); a plan stored before the field existed (an experiment resumed) reads as on, as it ran."""
    gpu = GpuRequest(80 * GIB, 1)
    for asked, planned in (("auto", False), (True, True), (False, False)):
        model = MODEL.model_copy(update={"cudnn_attention": asked})
        for shape, request in ((LLAMA_3_8B, gpu), (None, None)):
            plan = plan_memory(shape, model, TrainingConfig(), EvaluationConfig(), HP, request, 20)
            assert plan.cudnn_attention is planned
            assert plan.decide_model(model).cudnn_attention is planned
    stored = plan_memory(LLAMA_3_8B, MODEL, TrainingConfig(), EvaluationConfig(), HP, gpu, 20).model_dump(mode="json")
    del stored["cudnn_attention"]
    assert MemoryPlan.model_validate(stored).cudnn_attention is True
    with pytest.raises(ValueError, match="must be auto or true/false, got 'sometimes'"):
        ModelConfig(name_or_path="/m", cudnn_attention="sometimes")


def test_the_smallest_gpu_of_the_machine_is_read_from_nvidia_smi_and_none_where_it_cannot_say(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (tmp_path / "reply").write_text("81559, Disabled\n143771, Disabled\n")  # an H100 and an H200, in MiB
    assert memory.nvidia_smi_smallest_gpu_memory_bytes() == 81559 * 2**20
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the H200 alone, maybe: nvidia-smi's order may not be CUDA's
    assert memory.nvidia_smi_smallest_gpu_memory_bytes() == 81559 * 2**20
    (tmp_path / "reply").write_text("81559, [N/A]\n")  # a GPU without MIG
    assert memory.nvidia_smi_smallest_gpu_memory_bytes() == 81559 * 2**20
    for reply in ("81559, Enabled", "fail", "[N/A], Disabled", ""):  # MIG's instances are smaller than the board
        (tmp_path / "reply").write_text(reply)
        assert memory.nvidia_smi_smallest_gpu_memory_bytes() is None, reply
    (tmp_path / "reply").write_text("81559, Disabled")
    asked = (tmp_path / "asked").read_text()
    for visible in ("", "MIG-3f2a"):  # given no GPU, or MIG instances: nothing asked
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert memory.nvidia_smi_smallest_gpu_memory_bytes() is None
    assert (tmp_path / "asked").read_text() == asked
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # no nvidia-smi at all
    assert memory.nvidia_smi_smallest_gpu_memory_bytes() is None


def test_the_gpu_memory_is_read_from_nvidia_smi_for_the_first_gpu_given_and_none_where_it_cannot_say(
        tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "reply").write_text("143771\n")  # an H200, in MiB
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5c1e,GPU-77aa")  # Ray may give UUIDs
    assert memory.nvidia_smi_gpu_memory_bytes() == 143771 * 2**20
    assert (tmp_path / "asked").read_text().split()[-2:] == ["-i", "GPU-5c1e"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # every GPU visible: the first is 0
    assert memory.nvidia_smi_gpu_memory_bytes() == 143771 * 2**20
    assert (tmp_path / "asked").read_text().splitlines()[-1].split()[-2:] == ["-i", "0"]

    asked = (tmp_path / "asked").read_text()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # given no GPU: nothing to ask
    assert memory.nvidia_smi_gpu_memory_bytes() is None
    assert (tmp_path / "asked").read_text() == asked
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-3f2a")
    for reply in ("fail", "[N/A]"):  # an id it cannot answer for, or no number: torch is asked instead
        (tmp_path / "reply").write_text(reply)
        assert memory.nvidia_smi_gpu_memory_bytes() is None, reply
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # no nvidia-smi at all
    assert memory.nvidia_smi_gpu_memory_bytes() is None
