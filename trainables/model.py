"""The recipe's model: a causal LM loaded in 4-bit, prepared for k-bit training, LoRA on top."""

from __future__ import annotations

import copy
import gc
import itertools
import logging
import os
import sys
import warnings
import weakref
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any, Iterator

import bitsandbytes as bnb
import torch
import torch._inductor.config  # the trial's imports load it anyway (transformers, peft)
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from peft.tuners.lora import LoraLayer
from peft.utils.integrations import dequantize_bnb_weight
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from trainables.config import ModelConfig, TrialHyperparameters
from trainables.errors import ConfigError
from trainables.memory import compute_dtype_name

log = logging.getLogger(__name__)


def compute_dtype(model: ModelConfig) -> torch.dtype:
    return getattr(torch, compute_dtype_name(model, on_gpu=torch.cuda.is_available()))


def load_quantized_model(model: ModelConfig) -> Any:
    dtype = compute_dtype(model)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model.quant_type,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=model.double_quant,
    )
    # Ray sets CUDA_VISIBLE_DEVICES to this trial's GPUs; "auto" spreads over all of them.
    device_map = "auto" if torch.cuda.is_available() else "cpu"
    # Built from transformers' own classes even where an earlier Trainer in this process put Liger's in
    # their modeling module's names (a worker's second model, a benchmark's or a test's next model):
    # Liger's class-level patches would otherwise be in the new model for good, generation included.
    with _own_modeling_code_of_loaded_models():
        base = AutoModelForCausalLM.from_pretrained(
            model.name_or_path,
            quantization_config=quantization,
            dtype=dtype,
            device_map=device_map,
            attn_implementation=attention_implementation(model),
            trust_remote_code=model.trust_remote_code,
        )
    # Generation turns the KV cache on explicitly; in training a cache would also hide packed
    # examples' boundaries from the attention mask (transformers builds it only without a cache).
    base.config.use_cache = False
    keep_4bit_layout_on_cpu(base)
    remember_own_modeling_code(base)
    _dtypes_as_loaded[base] = {name: parameter.dtype for name, parameter in base.named_parameters()}
    return base


def attention_implementation(model: ModelConfig) -> str:
    """The attention kernel a trial's plan decided (trainables.memory.attention_kernel); `auto`
    undecided (a model loaded outside a trial's plan: scoring, a benchmark's plain side) is SDPA."""
    return "sdpa" if model.attention == "auto" else model.attention


def use_cudnn_attention(enabled: bool) -> None:
    """SDPA's cuDNN backend on or off (model.cudnn_attention). torch keeps the switch per process, and
    a worker runs one trial at a time, so each trial sets its own before it trains or generates."""
    torch.backends.cuda.enable_cudnn_sdp(enabled)


def use_deterministic_algorithms(enabled: bool, fill_uninitialized_memory: bool = False) -> None:
    """torch's deterministic kernels on or off (training.deterministic), with cuDNN's and Inductor's, and
    torch's fill of new memory while they are on (training.fill_uninitialized_memory); like
    cuDNN's attention a process-wide switch, so each trial sets its own. What transformers' full_determinism
    sets too, but for CUDA_LAUNCH_BLOCKING, which would serialize every launch where it is read.
    cuBLAS's fixed workspace comes and goes with them (_fix_cublas_workspace). Inductor (compiled layers) times
    candidate kernel configs on the device and keeps the fastest, and a reduction's config sets the order
    it adds in: its deterministic mode picks without timing. Off, it stays as the user's
    TORCHINDUCTOR_DETERMINISTIC set it."""
    _fix_cublas_workspace(enabled)
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch._inductor.config.deterministic = enabled or os.environ.get("TORCHINDUCTOR_DETERMINISTIC") == "1"
    # Off, torch's own default (True; read only while deterministic kernels are on), so a kept worker's
    # next trial and code that turns them on itself meet torch as it ships.
    torch.utils.deterministic.fill_uninitialized_memory = fill_uninitialized_memory or not enabled


# torch's advice for cuBLAS >= 10.2; :16:8, the other value torch accepts, cost more host time on an H100
# (0.539 s a step against 0.477 s, processes by turns: benchmarks/results/2026-12-06-fill-off-workspace)
DETERMINISTIC_CUBLAS_WORKSPACE = ":4096:8"
_cublas_workspace_set_here = False  # whether CUBLAS_WORKSPACE_CONFIG is the switch's own, not the user's


def _fix_cublas_workspace(enabled: bool) -> None:
    """cuBLAS's fixed workspace while deterministic kernels are on, and gone again when they go off, since
    it costs a default trial too: on an H100 (SmolLM2-135M shape, one trial at a time, 2026-12-06) it alone
    tripled aten::mm's host time (33 to 95 ms a step) and slowed every step to 0.77x (0.24 to 0.31 s), and
    cuBLAS still reads it after its first matmul: set by a deterministic trial, it slowed the default trials
    after it in the same process (benchmarks/results/2026-12-06-cublas-workspace); taken back, they ran at
    the default pace again (0.383 s against the cold trial's 0.415 s, 2026-12-06-fill-off-workspace). A value
    the user set stays either way."""
    global _cublas_workspace_set_here
    if enabled and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = DETERMINISTIC_CUBLAS_WORKSPACE
        _cublas_workspace_set_here = True
    elif not enabled and _cublas_workspace_set_here:
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG") == DETERMINISTIC_CUBLAS_WORKSPACE:
            del os.environ["CUBLAS_WORKSPACE_CONFIG"]
        _cublas_workspace_set_here = False


@contextmanager
def sdpa_while_generating(model: Any) -> Iterator[None]:
    """Generation runs SDPA whatever the training attention: FlexAttention is chosen, and measured,
    for padding-free training batches; decoding one token at a time against a KV cache is SDPA's."""
    base = transformers_model(model)
    chosen = base.config._attn_implementation
    if chosen in ("sdpa", "eager"):
        yield
        return
    base.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        base.set_attn_implementation(chosen)


def keep_4bit_layout_on_cpu(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its AVX512-BF16 kernel on CPUs that have one.

    On such a CPU, bitsandbytes 0.50 rewrites a Linear4bit's weight into a CPU-only layout at its
    first forward in eval mode without gradients (our ROUGE generation), and from then on computes
    that layer in bfloat16 whatever the compute dtype. Dequantizing the rewritten weight (the merged
    copy) then gives wrong values, and a trial that evaluated computes differently from one resumed
    from a checkpoint, whose weights are not yet rewritten. Whether it happens depends on the host's
    CPU: without this, tests passed on one CI machine and failed on the next.
    """
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def prepare_for_training(base: Any, gradient_checkpointing: bool, float32_dense_layers: bool = True) -> Any:
    """k-bit preparation: the base frozen, its unquantized layers (norms, embeddings, LM head) made
    float32 unless `float32_dense_layers` is off, activations recomputed or not.

    A base kept from an earlier trial of the same worker (trainables.warm) may have recompute on;
    preparation only ever turns it on, so a trial planned without it turns it off. What the earlier
    trial bound on its modules (compiled layers, TRL's fused LM head, Liger's kernels) goes too: this
    trial binds its own. Its dense layers go back to the dtypes they were loaded in, so a trial
    without float32 dense layers after one with them trains in bf16 as in a fresh process (on an H200
    one did not: it trained the float32 trial's losses, benchmarks/results/2026-12-03-first-rung-candidates).
    """
    restore_own_forwards(base)  # a kept base: an earlier trial's compiled layers, TRL's and Liger's bindings go
    _back_to_dtypes_as_loaded(base)
    with checkpointing_rename_quiet():
        if not gradient_checkpointing and base.is_gradient_checkpointing:
            base.gradient_checkpointing_disable()
        # Non-reentrant recompute, as the Trainer sets it (trainables.train): peft then adds no input hook.
        if float32_dense_layers:
            return prepare_model_for_kbit_training(base, use_gradient_checkpointing=gradient_checkpointing,
                                                   gradient_checkpointing_kwargs={"use_reentrant": False})
        # peft's preparation without its float32 cast (it has no switch for it): with non-reentrant
        # recompute, what else it does is freeze the base and turn recompute on.
        for parameter in base.parameters():
            parameter.requires_grad = False
        if gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return base


def _back_to_dtypes_as_loaded(base: Any) -> None:
    loaded = _dtypes_as_loaded.get(base, {})
    with torch.no_grad():
        for name, parameter in base.named_parameters():
            dtype = loaded.get(name)
            if dtype is not None and parameter.dtype != dtype:
                parameter.data = parameter.data.to(dtype)


def compile_decoder_layers(model: Any, fresh: bool = True, activations_kept: float = 0.0) -> None:
    """torch.compile each decoder layer in place, the repeated block (regional compilation): the
    layers share one compiled code, so it compiles once, not 32 times, and a checkpoint or the
    state dict sees the same modules. Dynamic shapes: a padding-free micro-batch's length changes
    every step. Recompute stays as planned, done by the compiler (InductorRecomputing), keeping
    `activations_kept` of what it could recompute.

    Why: on an H200 a trial's steps kept the GPU busy about 30 % of their time at equal memory (40 %
    on a whole GPU): per layer, the host dispatches hundreds of small ops through Python (peft's
    LoRA branches, bitsandbytes' 4-bit matmuls, autocast casts, norms), each a kernel of its own.
    Compiled, a layer is a few fused kernels launched from generated code.

    `fresh`: first forget what this process compiled before. A kept worker's next trial has new
    LoRA modules, so its layers compile again; left, every such recompile counts against dynamo's
    limit (8), past which layers run eagerly without a word. (The benchmark, whose sides share a
    process and compile in turn, passes False.)"""
    from transformers.modeling_layers import GradientCheckpointingLayer

    if fresh:
        torch._dynamo.reset()

    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    if not layers:
        raise ConfigError(f"training.compile_layers: {type(model).__name__} has no decoder layers transformers "
                          "marks as repeated blocks (GradientCheckpointingLayer); set it to false")
    # One backend for all the layers: dynamo keeps compiled code per backend, so they share one code.
    backend = InductorRecomputing(activations_kept if layers[0].gradient_checkpointing else NONE_RECOMPUTED)
    for layer in layers:
        layer.gradient_checkpointing = False  # the compiler recomputes instead (InductorRecomputing)
        layer.compile(dynamic=True, backend=backend)


NONE_RECOMPUTED = 1.0  # torch's activation_memory_budget: keep what the default partition keeps


class InductorRecomputing:
    """torch.compile's inductor backend, splitting the compiled layer into forward and backward
    with torch's activation memory budget at `activations_kept`: 0 keeps as little as the backward
    can rebuild from (the bytes a checkpoint keeps, tests/test_compile.py), 1 what the default
    partition keeps; between, the share of the difference (the partitioner's own definition).

    Why not a checkpoint: transformers 5.17 (the H200 image's) checkpoints around the compiled call
    from the layer's flag, and torch.utils.checkpoint runs what it wraps with dynamo off (the forward
    ran eagerly: 2,144 eager hooks a step on the 8B shape); and a checkpoint inside the compiled code
    failed to compile on torch 2.11 (inductor's partitioner: "Node add_441 was invalid, but is
    output", benchmarks/results/2026-12-02-trial-speed-merged-copy-bug). So the layer's flag goes
    off and the Trainer must not turn it on again (trainables.train).

    Why a backend of its own: the budget is torch's process-wide setting, read when the partition
    is made, and dynamo does not guard on it; it does keep compiled code per backend object, so a
    model compiled with another budget in the same process compiles its own code instead of running
    the first one's (tests/test_compile.py)."""

    def __init__(self, activations_kept: float) -> None:
        self.activations_kept = activations_kept

    def __call__(self, graph: Any, example_inputs: Any) -> Any:
        from torch._inductor.compile_fx import compile_fx  # what torch.compile's default backend calls

        with torch._functorch.config.patch(activation_memory_budget=self.activations_kept):
            return compile_fx(graph, example_inputs)


REBOUND_METHODS = ("forward", "extra_repr", "_get_name")  # what training binds on a module's instance


def restore_own_forwards(model: Any) -> None:
    """Every module runs its class's own code again: what a training run put on the instances goes.

    - compiled layers (compile_decoder_layers), their recompute with them: a deep copy's
      compiled code calls the original module's forward, so a merged copy must not keep it; nor a
      kept base whose next trial is planned otherwise;
    - TRL's fused LM head: SFTTrainer binds on the base model a forward that closes over the
      original model's own, so a deep copy's forward ran the 4-bit training model, not the copy's
      dense layers (every GPU trial's "merged copy" evaluation did until 2026-12-02;
      tests/test_model.py);
    - Liger's kernels (training.liger_kernels): the Trainer binds Liger's RMSNorm and SwiGLU
      forwards on the instances; a kept base would give them to the next trial even where its plan
      has none (Liger is planned per trial, by recompute). Liger's process-wide patches (RoPE; the
      classes of models loaded later) stay: generation sets them aside (own_code_while_generating).

    A forward that accelerate's device map put on a module (with its `_hf_hook`: a model spread
    over GPUs) stays: it moves the inputs to the module's device. The next Trainer binds what it
    needs anew.
    """
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None  # nn.Module.compile's slot; torch has no public way back
    for module, name in _bound_by_training(model):
        del module.__dict__[name]


def _bound_by_training(model: Any) -> list[tuple[Any, str]]:
    """The methods bound on `model`'s module instances (REBOUND_METHODS), accelerate's device hooks aside."""
    return [(module, name) for module in model.modules() for name in REBOUND_METHODS
            if name in module.__dict__ and not (name == "forward" and hasattr(module, "_hf_hook"))]


# A modeling module's names as transformers defined them, taken when the process first loads a model
# of it (load_quantized_model), before any Trainer can have applied Liger's kernels to it
_own_modeling_code: dict[str, dict[str, Any]] = {}

# Each loaded base's parameter dtypes as loaded (norms, embeddings, LM head in the compute dtype), by
# name: a kept base goes back to them before a trial's preparation (prepare_for_training)
_dtypes_as_loaded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def transformers_model(model: Any) -> Any:
    """The transformers model itself: a peft model's base, or the model as it is (a dense copy)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _modeling_module(model: Any) -> Any:
    return sys.modules[type(transformers_model(model)).__module__]


def remember_own_modeling_code(model: Any) -> None:
    module = _modeling_module(model)
    _own_modeling_code.setdefault(module.__name__, dict(vars(module)))


@contextmanager
def own_code_while_generating(model: Any) -> Iterator[None]:
    """While generating, the model runs transformers' own code, whatever its training put on it; on
    exit training gets it all back.

    - the methods a Trainer bound on the model's modules (TRL's fused LM head; Liger's RMSNorm and
      SwiGLU forwards), set aside;
    - what was replaced in the model's modeling module since the process loaded it (Liger's RoPE
      function; its norm and MLP classes), put back as transformers defined it.

    A trial's ROUGE must be its adapter's: the score that `best --eval-file`, an export or a fresh
    process gives the same checkpoint with the same config. Generated through Liger's kernels it was
    not: on an H200 (2026-12-03, SmolLM2, 4 trials, benchmarks/results/2026-12-02-sweep) each trial's
    in-run ROUGE-L equalled its checkpoint's scored under Liger's kernels to 1e-16, and its checkpoint
    scored in a fresh process differed by -0.008 to +0.008, as much as the gaps between trials that
    ASHA and `best` rank on. Greedy decoding follows the kernels' rounding.
    """
    bound = [(module, name, module.__dict__.pop(name)) for module, name in _bound_by_training(model)]
    try:
        with _own_modeling_names(_modeling_module(model)):
            yield
    finally:
        for module, name, method in bound:
            module.__dict__[name] = method


@contextmanager
def _own_modeling_code_of_loaded_models() -> Iterator[None]:
    """Every modeling module this process has loaded a model of (load_quantized_model) as
    transformers defined it, while the block runs; on exit, as it was."""
    with ExitStack() as stack:
        for name in list(_own_modeling_code):
            stack.enter_context(_own_modeling_names(sys.modules[name]))
        yield


@contextmanager
def _own_modeling_names(modeling: Any) -> Iterator[None]:
    """The names of `modeling` replaced since the process first loaded a model of it (Liger's RoPE
    function, norm and MLP classes) put back as transformers defined them; on exit, what was there."""
    own = _own_modeling_code.get(modeling.__name__)
    if own is None:  # a model not loaded by load_quantized_model: nothing known to put back
        log.debug("no record of %s as transformers defined it; its names stay as they are", modeling.__name__)
        own = {}
    replaced = {name: value for name, value in vars(modeling).items() if name in own and own[name] is not value}
    for name in replaced:
        setattr(modeling, name, own[name])
    try:
        yield
    finally:
        for name, value in replaced.items():
            setattr(modeling, name, value)


def attach_lora(base: Any, hp: TrialHyperparameters) -> Any:
    lora = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=hp.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with checkpointing_rename_quiet():
        return get_peft_model(base, lora)


@contextmanager
def checkpointing_rename_quiet() -> Iterator[None]:
    """Silence transformers' notices that `gradient_checkpointing` is renamed `activation_checkpointing`.

    transformers 5.2x deprecates the old names, and peft, TRL and our SFTConfig still use them; the
    new names do not exist in transformers 5.17 (the GPU image's), so the old ones stay. Every trial
    would print the same notices. Only these messages are silenced, only around the calls that raise them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"`(is_)?gradient_checkpointing(_kwargs|_enable|_disable)?` is deprecated")
        yield


def loaded_compute_dtype(model: Any) -> Any:
    """The torch dtype a loaded 4-bit model computes in (its bitsandbytes config's); for a model
    without one (a dense merged copy), the dtype of its weights."""
    quantization = getattr(model.config, "quantization_config", None)
    if quantization is None:
        return model.dtype
    dtype = quantization.bnb_4bit_compute_dtype
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def compute_autocast(model: Any) -> Any:
    """Autocast to the model's compute dtype on a GPU (a no-op elsewhere or in float32).

    A prepared 4-bit model keeps norms, embeddings and LoRA weights in float32, so without it the
    hidden states, attention, KV cache and LM head of generation all run in float32.
    """
    dtype = loaded_compute_dtype(model)
    if not torch.cuda.is_available() or dtype == torch.float32:
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype)


@contextmanager
def model_for_generation(model: Any, merged_copy: bool) -> Iterator[Any]:
    """The adapted model itself (its float32 parts in the compute dtype meanwhile), or
    (merged_copy) a dense merged copy of it, freed on exit; either runs transformers' own code
    (own_code_while_generating), not the kernels its training put on it."""
    if not merged_copy:
        # Compiled decoder layers (training.compile_layers) were compiled for training steps; a
        # decode step's cache and one-token shapes would compile them again, so they run eagerly.
        with own_code_while_generating(model), generating_in_compute_dtype(model), sdpa_while_generating(model), \
                torch.compiler.set_stance("force_eager"):
            yield model
        return
    dense = merged_dense_copy(model)
    try:
        with own_code_while_generating(dense), sdpa_while_generating(dense):
            yield dense
    finally:
        del dense
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand the copy's memory back before training goes on


@contextmanager
def generating_in_compute_dtype(model: Any) -> Iterator[None]:
    """While generating, the float32 parameters that k-bit preparation made of the base (norms,
    embeddings, an LM head; not LoRA's) hold compute-dtype copies; on exit the float32 tensors are
    put back, untouched, for training.

    With float32 norms, hidden states stay float32 under autocast, and so do the keys and values
    cached from them: twice a bf16 model's cache. Cast, generation runs as a bf16 model does: half
    the cache per sequence (twice the batch in the same memory), bf16 attention. The copies cost
    the compute dtype's bytes of those parameters while they live (trainables.memory plans them).
    """
    dtype = loaded_compute_dtype(model)
    if dtype == torch.float32:
        yield
        return
    kept = [(parameter, parameter.data) for name, parameter in model.named_parameters()
            if parameter.dtype == torch.float32 and "lora_" not in name]
    try:
        with torch.no_grad():
            for parameter, data in kept:
                parameter.data = data.to(dtype)
        yield
    finally:
        for parameter, data in kept:
            parameter.data = data


def merged_dense_copy(model: Any) -> Any:
    """The adapted model as a plain dense model in its compute dtype: every 4-bit weight
    dequantized and every LoRA delta added once, for generation.

    Generating through the 4-bit model dequantizes each weight again for each new token and runs
    the LoRA branch beside it; the copy runs plain matmuls instead. The training model is not
    touched: the copy shares only the tensors of the layers it replaces, and replaces them with
    new modules rather than changing them. It costs compute-dtype bytes per parameter while it lives.
    """
    base = transformers_model(model)
    dtype = loaded_compute_dtype(base)
    # LoRA layers and the 4-bit layers outside them; a LoRA layer's own 4-bit layer is its base_layer.
    replaced = [(name, module) for name, module in base.named_modules()
                if isinstance(module, LoraLayer)
                or (isinstance(module, bnb.nn.Linear4bit) and not name.endswith(".base_layer"))]
    shared = {id(t): t for _, m in replaced for t in itertools.chain(m.parameters(), m.buffers())}
    dense = copy.deepcopy(base, memo=shared)
    restore_own_forwards(dense)
    for name, module in replaced:
        parent_name, _, child = name.rpartition(".")
        parent = dense.get_submodule(parent_name) if parent_name else dense
        setattr(parent, child, _dense_linear(module, dtype))
    # The copy holds no quantized layer now; transformers refuses dtype casts while it says it does.
    dense.hf_quantizer.remove_quantization_config(dense)
    dense.to(dtype)  # norms and embeddings that k-bit preparation made float32 (copies, not shared)
    dense.eval()
    return dense


def _dense_linear(layer: Any, dtype: Any) -> Any:
    base_layer = layer.get_base_layer() if isinstance(layer, LoraLayer) else layer
    with torch.no_grad():
        if isinstance(base_layer, bnb.nn.Linear4bit):
            weight = dequantize_bnb_weight(base_layer.weight, state=base_layer.weight.quant_state)
        else:
            weight = base_layer.weight.detach()
        weight = weight.to(torch.float32)  # add the deltas in float32, round once
        if isinstance(layer, LoraLayer) and not layer.disable_adapters:
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    weight = weight + layer.get_delta_weight(adapter).to(torch.float32)
        linear = torch.nn.Linear(base_layer.in_features, base_layer.out_features, bias=base_layer.bias is not None,
                                 device="meta")
        linear.weight = torch.nn.Parameter(weight.to(dtype), requires_grad=False)
        if base_layer.bias is not None:
            linear.bias = torch.nn.Parameter(base_layer.bias.detach().to(dtype).clone(), requires_grad=False)
    return linear
