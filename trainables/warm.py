"""What a trial's worker process keeps for the next trial it runs.

With `resources.reuse_workers` the driver lets Tune hand a finished (or early-stopped) trial's
worker process to the next trial that asks for the same resources. That process has already paid
for its imports, its CUDA context, the tokenizer, the dialogues, their tokenized copies and the
4-bit base model; the next trial takes them from here instead of paying again. Between trials the
base model loses the previous trial's LoRA layers (peft's `unload`, without merging), so the next
trial starts from the same weights a fresh process would load, and its LoRA is drawn from its own
seed: a warm trial trains exactly as a cold one (tests/test_warm.py).

One of each is kept, keyed by the config it came from; a different model or data replaces it.

The process also keeps one thread that runs every trial it is given (`in_trial_thread`): Tune starts
a new thread for each trial of a kept worker, and CUDA libraries keep state per thread.
"""

from __future__ import annotations

import gc
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from trainables.config import DataConfig, ModelConfig, PromptConfig


@dataclass
class _Kept:
    tokenizer: tuple[str, Any] | None = None
    dialogues: tuple[str, Any] | None = None
    tokenized: dict[tuple, Any] = field(default_factory=dict)  # for the kept dialogues only
    base: tuple[str, Any] | None = None
    adapted: Any = None  # the last trial's PeftModel, whose LoRA layers sit inside the kept base


_kept = _Kept()
_lock = threading.Lock()  # Tune runs each trial in a thread of the worker; one trial at a time, but be sure
_trial_work: queue.SimpleQueue | None = None  # what the trial thread runs next (in_trial_thread)
_trial_thread_lock = threading.Lock()
Result = TypeVar("Result")


def in_trial_thread(run: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
    """`run(*args, **kwargs)` in this process's trial thread, started on first use and kept for
    the trials that follow; its result, or its exception raised here (SystemExit included: Ray
    Tune ends a stopped trial's thread with it).

    Why a thread of our own: Ray Tune runs each trial of a kept worker in a new thread, and CUDA
    libraries keep state per thread that a new one builds again. PyTorch caches cuDNN's attention
    graphs per thread (thread_local in its MHA code); on an H200 (2026-12-02 sweep,
    benchmarks/results/2026-12-02-sweep) each warm trial's first rung paid 1.3-2.7 s in its first
    step, 3-9 s in a few more, and twice its later rungs' validation loss and ROUGE time; two trials
    run one after the other in one thread (benchmarks/results/2026-12-02-first-rung) paid none of it.
    The thread is a daemon: a worker that Ray ends does not wait for it."""
    global _trial_work
    with _trial_thread_lock:
        if _trial_work is None:
            _trial_work = queue.SimpleQueue()
            threading.Thread(target=_run_trials, args=(_trial_work,), name="qlora-sweep-trial", daemon=True).start()
    done: Future = Future()
    _trial_work.put((done, run, args, kwargs))
    return done.result()


def _run_trials(work: queue.SimpleQueue) -> None:
    while True:
        done, run, args, kwargs = work.get()
        try:
            done.set_result(run(*args, **kwargs))
        except BaseException as error:  # noqa: B036 - handed to the waiting caller, SystemExit too
            done.set_exception(error)


# What a trial imports that asks nothing of CUDA on import, so that a worker may import it before Ray
# gives it a GPU (with resources.preload_libraries the driver has Ray preload these in its idle
# workers: search.tuner.start_ray), with what peft pulls in that asks nothing (transformers' masking
# and FSDP code) and what the trial scores and reports with. Not peft, trl or transformers' Trainer:
# they import bitsandbytes, which asks torch about every GPU, and a process that asked keeps the GPUs
# it saw then (tests/test_preload.py). Nor torch's compiler (torch._inductor.compile_fx, which
# bitsandbytes imported until trainables.lazy_compile): on the H200's torch 2.11 its benchmarking module
# asks is_available on import, though the CPU's 2.13 does not (benchmarks/cuda_on_import.py,
# benchmarks/results/2026-12-04-preload).
# On the 2-core CPU a process that has these imports the rest of trainables.trial in 2.1-3.0 s, one that has
# the first five in 4.9-6.2 s, of 12 s in all (2026-12-04, fresh processes by turns, 3 each).
CUDA_SAFE_IMPORTS = ("torch", "transformers", "transformers.modeling_utils", "accelerate", "datasets",
                     "transformers.masking_utils", "transformers.distributed.fsdp", "rouge_score.rouge_scorer",
                     "ray.tune")


def check_gpus_are_rays() -> None:
    """Refuse a trial in a process that sees more GPUs than the ones Ray gave it (CUDA_VISIBLE_DEVICES,
    set when the trial began): something it imported before then asked CUDA about the GPUs, and the
    CUDA runtime keeps the GPUs it saw at that first question. It would put every trial of a node on
    the same GPU. A preloaded module that asks on another torch than the ones checked does that."""
    import torch  # heavy: only trial processes reach this

    if not hasattr(torch._C, "_cuda_getDeviceCount"):  # a CPU build: no GPU to mix up
        return
    problem = gpus_beyond_given(os.environ.get("CUDA_VISIBLE_DEVICES"), torch._C._cuda_getDeviceCount())
    if problem:
        raise RuntimeError(problem)


def gpus_beyond_given(visible: str | None, seen: int) -> str | None:
    """What is wrong when the CUDA runtime sees `seen` GPUs in a process given `visible`
    (CUDA_VISIBLE_DEVICES; None: no list to hold it to), or None. Counted from the list, not by
    torch.cuda.device_count(), which keeps the count it gave first. Fewer is no harm: the list may
    name a GPU the node lacks."""
    if visible is None:
        return None
    given = len([device for device in visible.split(",") if device.strip()])
    if seen <= given:
        return None
    return (f"this trial's worker sees {seen} GPU(s) but was given {given} (CUDA_VISIBLE_DEVICES={visible!r}): "
            "a module it imported before the trial began asked CUDA about the GPUs; "
            "set resources.preload_libraries: false")


def take_rays_cpu_threads() -> None:
    """Run torch's CPU work on the threads Ray gave this trial (OMP_NUM_THREADS, which Ray sets from the
    trial's CPUs when the trial begins), in a worker that imported torch before then: torch sizes its
    thread pool at import, from the environment it sees, and keeps that size. A preloaded worker
    (resources.preload_libraries) imported torch with no OMP_NUM_THREADS and so took every core of the
    node; on the H200's 16 cores, six such trials each loaded the model in 26-28 s instead of 2 and ran
    every rung slower (benchmarks/results/2026-12-04-preload, gpu-ab). A worker that imported torch after
    Ray set it, as every worker without preloading does, already has the count: nothing changes."""
    threads = rays_cpu_threads()
    if threads is None:  # not run by Ray, nor told: torch's own choice stands
        return
    import torch  # heavy: only trial processes reach this

    torch.set_num_threads(threads)


def rays_cpu_threads() -> int | None:
    """The CPUs Ray gave this trial (OMP_NUM_THREADS, set from them); None outside Ray, where none was told."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return int(threads) if threads.isdigit() and int(threads) >= 1 else None


# Switches a trial sets on the running process, not part of what is loaded: trials differing only in
# them share the kept model
RUNTIME_SWITCHES = {"cudnn_attention"}


def _key(*configs: Any) -> str:
    return "|".join(config.model_dump_json(exclude=RUNTIME_SWITCHES) for config in configs)


def tokenizer_for(model: ModelConfig, load: Callable[[ModelConfig], Any]) -> Any:
    key = _key(model)
    with _lock:
        if _kept.tokenizer is None or _kept.tokenizer[0] != key:
            _kept.tokenizer = (key, load(model))
        return _kept.tokenizer[1]


def dialogues_for(data: DataConfig, load: Callable[[DataConfig], Any]) -> Any:
    key = _key(data)
    with _lock:
        if _kept.dialogues is None or _kept.dialogues[0] != key:
            _kept.dialogues = (key, load(data))
            _kept.tokenized.clear()
        return _kept.dialogues[1]


def tokenized_for(name: str, model: ModelConfig, prompt: PromptConfig, max_length: int,
                  tokenize: Callable[[], Any]) -> Any:
    """The kept dialogues' split or selection `name`, tokenized for this model's tokenizer, prompt and max_length."""
    key = (name, _key(model, prompt), max_length)
    with _lock:
        if key not in _kept.tokenized:
            _kept.tokenized[key] = tokenize()
        return _kept.tokenized[key]


def base_model_for(model: ModelConfig, load: Callable[[ModelConfig], Any]) -> tuple[Any, bool]:
    """The 4-bit base model without any LoRA, and whether it was kept from an earlier trial (warm)."""
    key = _key(model)
    with _lock:
        if _kept.base is not None and _kept.base[0] == key:
            base = _without_last_adapter(_kept.base[1])
            _free_what_the_last_trial_left()
            return base, True
        _kept.base, _kept.adapted = None, None
        _free_what_the_last_trial_left()
        base = load(model)
        _kept.base = (key, base)
        return base, False


def remember_adapted(adapted: Any) -> None:
    """The trial's PeftModel: the next trial takes its LoRA layers off the kept base."""
    with _lock:
        _kept.adapted = adapted


def _without_last_adapter(base: Any) -> Any:
    adapted, _kept.adapted = _kept.adapted, None
    if adapted is None:
        return base
    unloaded = adapted.unload()  # the base model object, its LoRA layers replaced by their base layers
    if unloaded is not base:
        raise RuntimeError("peft's unload returned a model other than the kept base")
    return base


def _free_what_the_last_trial_left() -> None:
    """The last trial's trainer, optimizer state and LoRA weights are garbage now; reference cycles
    (the Trainer's callbacks) keep them until a collection, and their GPU memory stays cached by
    torch until it is emptied: give it back to the GPU that other trials share."""
    gc.collect()
    import torch  # heavy: only trial processes reach this

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def forget_all() -> None:
    """Drop everything kept (tests, and a process that will run something else)."""
    global _kept
    with _lock:
        _kept = _Kept()
    _free_what_the_last_trial_left()
