"""trainables/warm.py: a worker that ran a trial hands the next trial the same 4-bit base model,
its LoRA taken off and its recompute setting undone, so the next trial trains exactly as it would
in a fresh process; a different model loads afresh."""

import pytest
import torch
from transformers import set_seed

from trainables import warm
from trainables.config import ModelConfig, TrialHyperparameters
from trainables.model import attach_lora, load_quantized_model, prepare_for_training

pytestmark = pytest.mark.unit

FIRST = TrialHyperparameters(lora_r=8, lora_alpha=32, learning_rate=1e-2, max_length=64, lora_dropout=0.0,
                             target_modules="all-linear")
SECOND = TrialHyperparameters(lora_r=4, lora_alpha=4, learning_rate=1e-3, max_length=64, lora_dropout=0.0,
                              target_modules=["q_proj", "v_proj"])


def _trial(model_config, hp, gradient_checkpointing, seed, float32_dense_layers=True):
    """What run_trial does with the model: kept base, preparation, LoRA from the trial's seed."""
    base, was_warm = warm.base_model_for(model_config, load_quantized_model)
    prepared = prepare_for_training(base, gradient_checkpointing, float32_dense_layers)
    set_seed(seed)
    model = attach_lora(prepared, hp)
    warm.remember_adapted(model)
    return model, was_warm


def _recomputes(model):
    """Whether any layer of the model recomputes its activations (transformers' flag, by any name)."""
    return any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


def _base_weights(base):
    """The base model's own weights by module name (a LoRA-wrapped layer's sit under base_layer)."""
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in base.named_parameters() if "lora_" not in n}


def _dense_dtypes(base):
    """The dtypes of the base's unquantized parameters (norms, embeddings, LM head) by name."""
    return {n: p.dtype for n, p in base.named_parameters() if "lora_" not in n and p.dtype != torch.uint8}


def _train_two_steps(model, ids):
    """Loss before and after two SGD steps, and the LoRA weights after."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        losses.append(model(input_ids=ids, labels=ids).loss.item())
    return losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_a_warm_trial_trains_exactly_as_the_same_trial_in_a_fresh_process(tiny_model_path, compute_dtype):
    """In bfloat16 the first trial keeps its dense layers in float32 and the second does not
    (training.float32_dense_layers): the second must train in bf16 as a fresh process does, not in
    the float32 its kept base was left in (on an H200 it did, and trained the float32 losses)."""
    from peft.tuners.lora import LoraLayer

    config = ModelConfig(name_or_path=str(tiny_model_path), compute_dtype=compute_dtype)
    second_float32_dense = compute_dtype == "float32"
    ids = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(0))
    warm.forget_all()
    first, was_warm = _trial(config, FIRST, gradient_checkpointing=True, seed=0)
    assert not was_warm and _recomputes(first.get_base_model())
    assert set(_dense_dtypes(first.get_base_model()).values()) == {torch.float32}
    base_weights = _base_weights(first.get_base_model())
    _train_two_steps(first, ids)  # the first trial's adapter moves; the base must not

    second, was_warm = _trial(config, SECOND, gradient_checkpointing=False, seed=1,
                              float32_dense_layers=second_float32_dense)
    assert was_warm and second.get_base_model() is first.get_base_model()  # loaded once
    base = second.get_base_model()
    assert not _recomputes(base)  # this trial's plan says no recompute
    lora_layers = [name for name, m in base.named_modules() if isinstance(m, LoraLayer)]
    assert lora_layers and all(name.endswith(("q_proj", "v_proj")) for name in lora_layers)  # only its own LoRA
    after = _base_weights(base)
    assert after.keys() == base_weights.keys()
    assert all(torch.equal(base_weights[n].to(after[n].dtype), after[n]) for n in after)
    warm_dtypes = _dense_dtypes(base)
    warm_losses, warm_adapter = _train_two_steps(second, ids)

    warm.forget_all()  # the same trial in a fresh process
    cold, was_warm = _trial(config, SECOND, gradient_checkpointing=False, seed=1,
                            float32_dense_layers=second_float32_dense)
    assert not was_warm
    assert warm_dtypes == _dense_dtypes(cold.get_base_model())
    assert set(warm_dtypes.values()) == {getattr(torch, compute_dtype)}
    cold_losses, cold_adapter = _train_two_steps(cold, ids)
    assert warm_losses == cold_losses and warm_losses[-1] < warm_losses[0]
    assert warm_adapter.keys() == cold_adapter.keys()
    assert all(torch.equal(warm_adapter[n], cold_adapter[n]) for n in warm_adapter)
    warm.forget_all()


def test_another_model_or_data_is_loaded_afresh_and_the_same_is_kept(tiny_model_path, tmp_path):
    from trainables.config import DataConfig

    warm.forget_all()
    loads = []

    def load(config):
        loads.append(config.name_or_path)
        return load_quantized_model(config)

    config = ModelConfig(name_or_path=str(tiny_model_path))
    warm.base_model_for(config, load)
    _, was_warm = warm.base_model_for(config, load)
    assert was_warm and len(loads) == 1
    _, was_warm = warm.base_model_for(config.model_copy(update={"double_quant": True}), load)
    assert not was_warm and len(loads) == 2  # another quantization is another model

    reads = []
    data = DataConfig(max_train_examples=8)
    for _ in range(2):
        warm.dialogues_for(data, lambda d: reads.append(d) or {"train": [], "validation": []})
    warm.dialogues_for(data.model_copy(update={"max_train_examples": 9}), lambda d: reads.append(d) or {})
    assert len(reads) == 2
    warm.forget_all()


def test_every_trial_of_a_worker_runs_in_one_kept_thread_whose_result_or_exception_reaches_the_caller():
    """Tune calls each trial of a kept worker from a new thread; in_trial_thread runs them all in one
    thread of the process (CUDA libraries cache per thread), and hands back what each returned or
    raised, SystemExit included (Tune ends a stopped trial's thread with it)."""
    import threading

    def callers_trial(results):
        results.append(warm.in_trial_thread(lambda x: (x, threading.get_ident()), len(results)))

    results = []
    for _ in range(3):  # three trials, each called from a thread of its own, as Tune does
        caller = threading.Thread(target=callers_trial, args=(results,))
        caller.start()
        caller.join()
    assert [value for value, _ in results] == [0, 1, 2]
    ran_in = {thread for _, thread in results}
    assert len(ran_in) == 1 and ran_in != {threading.get_ident()}

    def stopped():
        raise SystemExit(0)

    with pytest.raises(SystemExit):
        warm.in_trial_thread(stopped)
    with pytest.raises(ValueError, match="bad trial"):
        warm.in_trial_thread(lambda: (_ for _ in ()).throw(ValueError("bad trial")))
    assert warm.in_trial_thread(threading.get_ident) in ran_in  # the thread outlives its trials' failures


def test_a_trial_refuses_a_worker_whose_cuda_sees_more_gpus_than_ray_gave_it_and_only_that():
    # the worker asked CUDA before Ray hid the other GPUs: every trial of the node would train on one
    problem = warm.gpus_beyond_given("", seen=1)
    assert problem and "sees 1 GPU(s) but was given 0" in problem and "resources.preload_libraries: false" in problem
    assert warm.gpus_beyond_given("3", seen=8) is not None
    assert warm.gpus_beyond_given("3", seen=1) is None
    assert warm.gpus_beyond_given("0,1", seen=2) is None
    assert warm.gpus_beyond_given("0,1,7", seen=2) is None  # the list names a GPU the node lacks: no harm
    assert warm.gpus_beyond_given(None, seen=8) is None  # not given a list: every GPU is the process's
    warm.check_gpus_are_rays()  # this process asked nothing before: it may run (on a CPU build, nothing to check)


def test_a_trial_runs_torch_on_the_cpu_threads_ray_gave_it_and_leaves_torch_alone_when_not_told(monkeypatch):
    kept = torch.get_num_threads()
    assert kept > 1, "this machine has at least 2 cores, so torch's own count differs from Ray's share of 1"
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # Ray sets it from the trial's CPUs when the trial begins
        warm.take_rays_cpu_threads()
        assert torch.get_num_threads() == 1
        torch.set_num_threads(kept)
        for not_told in ("", "auto", "0"):
            monkeypatch.setenv("OMP_NUM_THREADS", not_told)
            warm.take_rays_cpu_threads()
            assert torch.get_num_threads() == kept, not_told
        monkeypatch.delenv("OMP_NUM_THREADS")
        warm.take_rays_cpu_threads()
        assert torch.get_num_threads() == kept
    finally:
        torch.set_num_threads(kept)
