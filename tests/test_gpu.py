"""On a CUDA GPU, what the memory plan and the fast paths assume of it: generating through the
4-bit model caches keys and values in bf16 under autocast (trainables.memory plans 2 bytes a
value; the prepared model alone would cache float32), a bf16
merged copy generates what the adapted 4-bit model does, TRL's fused LM head gives the loss of
full logits, compiled decoder layers compile whole, and Liger's kernels give the loss and gradients
of the plain layers (and are gone from a merged copy and a kept base). Skipped elsewhere, with
the reason (tests/conftest.py)."""


import pytest
import torch

from tests.helpers import sample_training_set
from trainables.config import ModelConfig, TrainingConfig, TrialHyperparameters
from trainables.evaluation import generate_summaries
from trainables.memory import FLOAT32_BYTES
from trainables.model import (attach_lora, compute_autocast, generating_in_compute_dtype, load_quantized_model,
                               merged_dense_copy, model_for_generation, prepare_for_training, restore_own_forwards)

pytestmark = pytest.mark.gpu

HP = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=192, lora_dropout=0.0,
                          target_modules="all-linear")


def _adapted(path):
    model = attach_lora(prepare_for_training(load_quantized_model(ModelConfig(name_or_path=str(path))), False), HP)
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)
    return model.eval()


def test_generation_through_the_4bit_model_caches_bf16_under_autocast_on_the_gpu(tiny_model_path):
    model = _adapted(tiny_model_path)
    assert next(model.parameters()).is_cuda
    ids = torch.randint(0, 500, (1, 8), device="cuda")
    with torch.no_grad(), compute_autocast(model):
        prepared = model(input_ids=ids, use_cache=True).past_key_values
        with model_for_generation(model, merged_copy=False) as generator:
            cast = generator(input_ids=ids, use_cache=True).past_key_values
    assert prepared.layers[0].keys.dtype.itemsize == FLOAT32_BYTES  # float32 norms: float32 hidden states
    assert cast.layers[0].keys.dtype == torch.bfloat16  # what the plan assumes for generation


def test_a_bf16_merged_copy_generates_what_the_adapted_4bit_model_generates(tiny_model_path, tiny_tokenizer):
    model = _adapted(tiny_model_path)
    prompts = [f"### Instruct: Summarize.\n\n#Person1#: hello {i} " * (1 + i % 3) + "\n\n### Output:\n" for i in range(6)]
    direct = generate_summaries(model, tiny_tokenizer, prompts, "### End", max_new_tokens=8, batch_size=4)
    with model_for_generation(model, merged_copy=True) as dense:
        assert {p.dtype for p in dense.parameters()} == {torch.bfloat16}
        merged = generate_summaries(dense, tiny_tokenizer, prompts, "### End", max_new_tokens=8, batch_size=4)
    agreeing = sum(a == b for a, b in zip(direct, merged))
    assert agreeing >= 5, (direct, merged)  # greedy decoding may part at a bf16 near-tie, rarely


def test_the_fused_lm_head_gives_the_loss_of_full_logits_on_the_gpu(tiny_model_path, tiny_tokenizer, tmp_path):
    from trainables.train import build_trainer

    dataset = sample_training_set(tiny_tokenizer, 4)
    losses = {}
    for fused in (False, True):
        model = _adapted(tiny_model_path)
        training = TrainingConfig(micro_batch_size=4, gradient_checkpointing=False, fused_lm_head=fused)
        trainer = build_trainer(model, tiny_tokenizer, dataset, dataset, training, HP, total_steps=1,
                                eval_batch_size=4, output_dir=str(tmp_path / str(fused)), callbacks=[])
        batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
        batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.no_grad(), compute_autocast(model):
            losses[fused] = float(trainer.compute_loss(model, batch))
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_compiled_decoder_layers_train_on_the_gpu_in_whole_graphs(tiny_model_path, tiny_tokenizer, tmp_path):
    """As a trial with compile_layers trains on a GPU: recompute, bf16 dense layers, LoRA dropout,
    padding-free micro-batches of different lengths, the fused LM head. The layers compile whole:
    on the CPU they do (tests/test_compile.py). On an H200 (torch 2.11) a checkpoint inside the
    compiled code failed to compile (inductor's partitioner), and Liger's process-wide RoPE broke
    the layers into pieces; the compiler's recompute has not run there yet. The breaks' reasons are
    the failure's message."""
    from torch._dynamo.utils import counters

    from trainables.model import compile_decoder_layers
    from trainables.train import build_trainer

    dataset = sample_training_set(tiny_tokenizer, 8)
    hp = HP.model_copy(update={"lora_dropout": 0.05})
    model = attach_lora(prepare_for_training(load_quantized_model(ModelConfig(name_or_path=str(tiny_model_path))),
                                             True, float32_dense_layers=False), hp)
    compile_decoder_layers(model)
    counters.clear()
    training = TrainingConfig(micro_batch_size=2, gradient_checkpointing=True, fused_lm_head=True, liger_kernels=False,
                              float32_dense_layers=False, compile_layers=True, steps_per_rung=4)
    trainer = build_trainer(model, tiny_tokenizer, dataset, dataset, training, hp, total_steps=4, eval_batch_size=2,
                            output_dir=str(tmp_path / "compiled"), callbacks=[])
    trainer.train()
    assert not counters["graph_break"], "\n\n".join(counters["graph_break"])
    assert 1 <= counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])


def test_liger_kernels_give_the_loss_and_gradients_of_the_plain_layers_on_the_gpu(tiny_model_path, tiny_tokenizer,
                                                                                   tmp_path):
    """Liger's RMSNorm, SwiGLU and RoPE kernels on 4-bit layers under peft's LoRA, as the Trainer
    applies them when training starts: one SGD step each way, from the same adapter, on the same
    rows. Liger's RoPE patch is process-wide, so the plain layers go first."""
    from trainables.train import build_trainer

    dataset = sample_training_set(tiny_tokenizer, 4)
    losses, updates = {}, {}
    for liger in (False, True):
        model = _adapted(tiny_model_path).train()
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        training = TrainingConfig(micro_batch_size=4, gradient_checkpointing=False, liger_kernels=liger,
                                  optimizer="sgd")
        trainer = build_trainer(model, tiny_tokenizer, dataset, dataset, training, HP, total_steps=1,
                                eval_batch_size=4, output_dir=str(tmp_path / str(liger)), callbacks=[])
        losses[liger] = trainer.train().training_loss  # the one step's loss, before its update
        norms = {m._get_name() for m in model.modules() if "RMSNorm" in m._get_name()}  # Liger renames what it patches
        assert norms == ({"LigerRMSNorm"} if liger else {"LlamaRMSNorm"}), norms
        updates[liger] = torch.cat([(p.detach() - before[n]).flatten().float()
                                    for n, p in model.named_parameters() if n in before])
        if liger:  # Liger (and TRL's fused LM head) are bound on the base's instances; a merged copy and a kept
            base = model.get_base_model()  # base's next trial run the classes' own forwards
            dense = merged_dense_copy(model)
            assert _rebound_modules(dense) == [] and _rebound_modules(base) != []
            restore_own_forwards(base)  # what the next trial on this kept base has done first
            assert _rebound_modules(base) == []
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)
    assert updates[False].abs().sum() > 0
    cosine = torch.nn.functional.cosine_similarity(updates[True], updates[False], dim=0)
    assert cosine > 0.99, float(cosine)


def test_a_model_training_with_liger_generates_through_transformers_own_code_on_the_gpu(tiny_model_path, tiny_tokenizer,
                                                                                        tmp_path):
    """The Trainer puts Liger's kernels on the model when training starts (per instance, and RoPE for
    the whole process); the trial's ROUGE is generated without them, so that it is the score a fresh
    process gives the same adapter (trainables.model.own_code_while_generating): the summaries are
    those of the trained model with Liger taken off by hand, and training has Liger back afterwards."""
    import sys

    from trainables.train import build_trainer

    model = _adapted(tiny_model_path).train()
    prompts = [f"### Instruct: Summarize.\n\n#Person1#: hello {i} " * (1 + i % 3) + "\n\n### Output:\n" for i in range(6)]
    dataset = sample_training_set(tiny_tokenizer, 4)
    training = TrainingConfig(micro_batch_size=4, gradient_checkpointing=False, liger_kernels=True)
    build_trainer(model, tiny_tokenizer, dataset, dataset, training, HP, total_steps=1, eval_batch_size=4,
                  output_dir=str(tmp_path), callbacks=[]).train()
    modeling = sys.modules[type(model.get_base_model()).__module__]
    liger_rope = modeling.apply_rotary_pos_emb
    assert liger_rope.__module__.startswith("liger_kernel"), liger_rope.__module__
    liger_bound = _rebound_modules(model)
    assert any("norm" in name for name in liger_bound), liger_bound
    with model_for_generation(model, merged_copy=False) as generator:
        assert _rebound_modules(generator) == []
        own_rope = modeling.apply_rotary_pos_emb
        assert own_rope.__module__.startswith("transformers"), own_rope.__module__
        during = generate_summaries(generator, tiny_tokenizer, prompts, "### End", max_new_tokens=8, batch_size=4)
    assert modeling.apply_rotary_pos_emb is liger_rope and _rebound_modules(model) == liger_bound

    restore_own_forwards(model)  # Liger off by hand: the layers' own forwards, transformers' RoPE
    modeling.apply_rotary_pos_emb = own_rope
    try:
        with generating_in_compute_dtype(model):  # as model_for_generation casts the float32 norms
            by_hand = generate_summaries(model, tiny_tokenizer, prompts, "### End", max_new_tokens=8, batch_size=4)
    finally:
        modeling.apply_rotary_pos_emb = liger_rope
    assert during == by_hand


def _rebound_modules(model):
    """The modules that run something other than their class's own forward, by name."""
    return [name for name, module in model.named_modules()
            if getattr(module.forward, "__func__", None) is not type(module).forward]


def test_compiled_layers_train_inside_rays_workers_on_the_gpu(tiny_model_path, tmp_path):
    """A sweep as a user runs it, with compile_layers on and the GPU split between trials: each trial
    compiles and trains its layers inside a Tune worker process on the GPU Ray gave it, the second in
    the first one's kept worker, every rung reported with a finite loss and none in ERROR, and no
    worker logs a graph break (TORCH_LOGS; Ray passes a worker's output to driver.log, where dynamo's
    own lines show that it compiled there).
    The other compiled-layers tests run in the test's own process, never in one of Ray's."""
    import json
    import math
    import os
    import subprocess
    import sys

    from tests.conftest import tiny_sweep_dict, write_config
    from tests.helpers import ROOT, trial_dirs
    from trainables.checkpoint_files import TRIAL_RECORD

    config = tiny_sweep_dict(
        tiny_model_path, tmp_path / "runs",
        training={"compile_layers": True, "float32_dense_layers": False, "gradient_checkpointing": True,
                  "steps_per_rung": 3},
        search={"lora_r": {"choice": [4]}, "lora_alpha": {"choice": [8]}, "max_length": {"choice": [192]},
                "num_trials": 2, "max_concurrent_trials": 1},
        scheduler={"max_rungs": 2, "grace_period": 2},
        resources={"cpus_per_trial": 1, "gpus_per_trial": 0.5, "reuse_workers": True})
    done = subprocess.run([sys.executable, "-m", "search", "run", str(write_config(tmp_path / "sweep.yaml", config))],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "TORCH_LOGS": "dynamo,graph_breaks"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    experiment = next((tmp_path / "runs").iterdir())
    dirs = trial_dirs(experiment)
    assert len(dirs) == 2
    rows = [[json.loads(line) for line in (d / "result.json").read_text().splitlines()] for d in dirs]
    assert [len(r) for r in rows] == [2, 2]
    assert all(row["gpu_ids"] and math.isfinite(row["train_loss"]) and row["tokens_per_s"] > 0
               for trial in rows for row in trial)
    assert sorted(trial[0]["warm_start"] for trial in rows) == [False, True]  # the second ran in the kept worker
    records = [json.loads(p.read_text()) for d in dirs for p in d.rglob(TRIAL_RECORD)]
    assert records and all(r["trial"]["training"]["compile_layers"] is True for r in records)
    log = (experiment / "driver.log").read_text()
    assert "torchdynamo start tracing" in log  # dynamo's own line, from a worker: the layers compiled there
    assert "Graph break" not in log and "graph break" not in log, \
        "\n".join(line for line in log.splitlines() if "raph break" in line)[:3000]


# Three trials one after another in one process, as a kept worker runs them (trainables.warm keeps the base):
# deterministic, default, deterministic. Prints, for each, what it trained and how the process was set after it.
_TRIALS_IN_ONE_WORKER = """
import json, os, sys
import torch
from search.config import SweepConfig
from search.packing import TrialPlanner
from tests.conftest import tiny_sweep_dict
from tests.helpers import RecordingSession
from trainables.trial import run_trial

model, folder = sys.argv[1], sys.argv[2]
trials = []
for i, deterministic in enumerate((True, False, True)):
    sweep = SweepConfig.model_validate(tiny_sweep_dict(
        model, f"{folder}/{i}", data={"max_train_examples": 32, "max_validation_examples": 4},
        evaluation={"max_new_tokens": 4, "rung_examples": "all"}, scheduler={"max_rungs": 2},
        training={"steps_per_rung": 3, "micro_batch_size": 4, "deterministic": deterministic}))
    trial = TrialPlanner.alone_on_this_machine(sweep).trial_config(
        {"lora_r": 4, "lora_alpha": 8, "max_length": 192, "learning_rate": 1e-3})
    session = RecordingSession()
    run_trial(trial, session=session)
    trials.append({"rungs": [{k: r[k] for k in ("first_step_loss", "train_loss", "eval_loss", "rougeL", "warm_start")}
                             for r in session.rungs],
                   "liger_kernels": trial.training.liger_kernels, "fused_lm_head": trial.training.fused_lm_head,
                   "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                   "deterministic_after": torch.are_deterministic_algorithms_enabled(),
                   "gpu_bytes": torch.cuda.max_memory_allocated()})
print(json.dumps(trials))
"""


def test_deterministic_trials_repeat_on_the_gpu_around_a_default_trial_in_the_same_worker(tiny_model_path, tmp_path):
    """training.deterministic as a kept worker meets it on a GPU, with the GPU's defaults (Liger's kernels where
    installed, TRL's fused LM head, bf16 dense layers): a deterministic trial, a default one, the deterministic one
    again. What the CPU test (tests/test_deterministic.py) cannot see: torch refuses an op that has no
    deterministic CUDA kernel, so every op of a GPU trial must have one; the two deterministic trials train,
    score and evaluate the same to the last digit, the second after a default trial and on the kept base; and
    the default trial runs without cuBLAS's fixed workspace (0.77x a step on an H100 when left set). In a
    process of its own: torch's switch and Liger's patches are process-wide."""
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("CUBLAS_WORKSPACE_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", _TRIALS_IN_ONE_WORKER, str(tiny_model_path), str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, default, again = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(trial["gpu_bytes"] > 0 for trial in (first, default, again))  # they trained on the GPU
    assert [r["warm_start"] for r in again["rungs"]] == [True, True]  # on the kept base, as a kept worker's trial
    strip = [{k: v for k, v in r.items() if k != "warm_start"} for r in first["rungs"]]
    assert [{k: v for k, v in r.items() if k != "warm_start"} for r in again["rungs"]] == strip, (first, again)
    assert len(strip) == 2 and first["fused_lm_head"] is True
    assert first["cublas_workspace"] == ":4096:8" and first["deterministic_after"]
    assert default["cublas_workspace"] is None and not default["deterministic_after"]
