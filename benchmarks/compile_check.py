"""How compiled decoder layers (training.compile_layers) really run a training step, on this
machine's transformers, torch and device: graphs compiled, graph breaks and their reasons, and per
step the compiled calls and torch.utils.checkpoint's eager hooks. Cheap: a tiny model, a few steps.

    python tests/tiny_model.py /tmp/tiny
    python benchmarks/compile_check.py --model /tmp/tiny --out compile_check.json [--recompute]

Why it exists: on an H200 with transformers 5.17 a compiled 8B trial ran 2,144 eager checkpoint
hooks a step, and the GPU stayed 26 % busy. transformers 5.17 checkpoints a decoder layer in its
`__call__`, and torch.utils.checkpoint runs the forward it checkpoints with dynamo off, so with
recompute the "compiled" layers' forward ran eagerly. A checkpoint moved inside the compiled code
then failed to compile on torch 2.11 (it compiles on an H200 since 2026-12-02's third run).
trainables.model.compile_decoder_layers turns the checkpoint off and lets the compiler recompute
(InductorRecomputing: torch's activation memory budget at 0); --transformers-checkpoint keeps
transformers' own, to see the difference (it fails on torch 2.11, on CPU too). A layer compiled whole runs one compiled call
forward and one backward, and no eager hook. A compile that fails is written as the result's
`error` (exit code 1).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import pstats
import sys
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from tests.tiny_model import SAMPLE  # noqa: E402
from trainables import model as trial_model  # noqa: E402
from trainables.config import ModelConfig, TrialHyperparameters  # noqa: E402
from trainables.model import compute_autocast  # noqa: E402
from trainables.prompt import load_tokenizer  # noqa: E402


def dynamo_counts(since: dict[str, Any] | None = None) -> dict[str, Any]:
    """What torch.compile has done in this process (or since an earlier count): graphs compiled,
    and graph breaks by reason (its text, shortened). A layer that breaks runs its pieces
    from Python between graphs, which is the host time compiling was meant to save."""
    breaks = collections.Counter({" / ".join(line.strip() for line in reason.splitlines() if line.strip())[:500]: count
                                  for reason, count in counters["graph_break"].items()})
    graphs = counters["stats"]["unique_graphs"]
    if since is None:
        return {"graphs": graphs, "graph_breaks": dict(breaks)}
    new_breaks = breaks - collections.Counter(since["graph_breaks"])
    return {"graphs": graphs - since["graphs"], "graph_breaks": dict(new_breaks)}


def census(model_path: str, recompute: bool, transformers_checkpoint: bool, steps: int = 2) -> dict:
    """Compile a LoRA-adapted 4-bit model's layers as a trial does, train `steps` steps of
    different lengths (the compiles), then profile one more step."""
    config = ModelConfig(name_or_path=model_path)
    tokenizer = load_tokenizer(config)
    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=512, lora_dropout=0.05,
                              target_modules="all-linear")
    model = trial_model.attach_lora(trial_model.prepare_for_training(
        trial_model.load_quantized_model(config), recompute, float32_dense_layers=False), hp)
    if transformers_checkpoint:  # compile without moving the checkpoint: what transformers itself does
        layers = [m for m in model.modules() if isinstance(m, transformers.modeling_layers.GradientCheckpointingLayer)]
        torch._dynamo.reset()
        for layer in layers:
            layer.compile(dynamic=True)
    else:
        trial_model.compile_decoder_layers(model)
    dialogue = json.loads(SAMPLE.read_text().splitlines()[0])["dialogue"]
    ids = tokenizer(dialogue * 4, return_tensors="pt")["input_ids"][:, :400].to(model.device)
    model.train()

    def step(length: int) -> None:
        with compute_autocast(model):
            loss = model(input_ids=ids[:, :length], labels=ids[:, :length]).loss
        loss.backward()

    counters.clear()
    for length in (400, 300)[:steps]:
        step(length)
    profiler = cProfile.Profile()
    profiler.enable()
    step(350)
    profiler.disable()
    calls = {(Path(file).name, name): stats[1] for (file, _, name), stats in pstats.Stats(profiler).stats.items()}
    hooks = sum(n for (file, name), n in calls.items()
                if file == "checkpoint.py" and name in ("pack_hook", "unpack_hook"))
    return {
        "transformers": transformers.__version__, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "recompute": recompute,
        "checkpoint": "transformers'" if transformers_checkpoint else "none: the compiler recomputes",
        "layers": sum(isinstance(m, transformers.modeling_layers.GradientCheckpointingLayer) for m in model.modules()),
        **dynamo_counts(),
        "compiled_calls_per_step": sum(n for (file, name), n in calls.items()
                                       if file == "output_code.py" and name == "__call__"),
        "eager_checkpoint_hooks_per_step": hooks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local model folder (tests/tiny_model.py makes one)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--recompute", action="store_true", help="recompute activations, as a trial in a small share")
    parser.add_argument("--transformers-checkpoint", action="store_true",
                        help="leave the checkpoint where transformers puts it (instead of the compiler's recompute)")
    args = parser.parse_args(argv)
    try:
        result = census(args.model, args.recompute, args.transformers_checkpoint)
    except Exception as error:  # noqa: BLE001 - a compile that fails on this machine is the finding
        traceback.print_exc()
        result = {"transformers": transformers.__version__, "torch": torch.__version__, "recompute": args.recompute,
                  "error": f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}"}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
