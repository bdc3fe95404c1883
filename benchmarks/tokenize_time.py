"""What a fresh trial worker pays to tokenize its training split (datasets' cache not used), batched
(trainables.prompt.encode_examples, as trials run it) against one tokenizer call per example (as
trials ran it before 2026-12-04, and as benchmarks/plain_ray_tune.py's by-hand trials still do), and
batched with each tokenizer call split over --threads threads (`threaded`: as the driver tokenizes
ahead of the trials since 2026-12-05, and a trial on Ray's CPUs), by turns in one process.

    python benchmarks/tokenize_time.py --data ../shared/data/dialogsum \
        --tokenizer ../shared/models/smollm2-135m-instruct-tokenizer --rounds 4 --out tokenize.json
    ... --sides batched,threaded --threads 2 --out threads.json

The data are held out and cleaned as a trial's are (--test-examples: data.test_examples); both sides give the same
rows (checked each round). On the H200 sweep of 2026-12-04 a fresh worker spent 16.5 s on its data
before its first step, and 1.0-1.2 s once the driver tokenized ahead of it (search/checks.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# Off, as a sweep's driver and trials have it (search.output.LIBRARY_SETTINGS): on, the Rust tokenizer
# spreads each batched call over every core itself, which a sweep never lets it do
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIDES = ("one_call_per_example", "batched", "threaded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a dialogue folder or file (data.path)")
    parser.add_argument("--tokenizer", required=True, help="a model or tokenizer folder")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per training example (default 512)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both sides, by turns (default 4)")
    parser.add_argument("--test-examples", type=int, default=500,
                        help="train dialogues held out as a trial holds them out (data.test_examples, default 500)")
    parser.add_argument("--sides", default="one_call_per_example,batched",
                        help=f"two or more of {', '.join(SIDES)}, comma-separated (default the first two)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the threaded side (default 2)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    sides = tuple(args.sides.split(","))
    if len(set(sides)) < 2 or len(set(sides)) != len(sides) or not set(sides) <= set(SIDES):
        print(f"tokenize_time: --sides {args.sides}: two or more of {', '.join(SIDES)}, each once", file=sys.stderr)
        return 2
    if args.threads < 2:
        print("tokenize_time: --threads must be at least 2", file=sys.stderr)
        return 2
    for flag, path in (("--data", args.data), ("--tokenizer", args.tokenizer)):
        if not Path(path).exists():
            print(f"tokenize_time: {flag} {path} does not exist", file=sys.stderr)
            return 2
    if min(args.rounds, args.max_length) < 1 or args.test_examples < 0:
        print("tokenize_time: --rounds and --max-length must be at least 1, --test-examples at least 0",
              file=sys.stderr)
        return 2

    import trainables.data
    from trainables.config import DataConfig, ModelConfig, PromptConfig
    from trainables.prompt import encode_example, encode_examples, load_tokenizer, tokenizing_threads

    def one_call_per_example(tokenizer, prompt, dialogues, summaries, max_length):
        return [encode_example(tokenizer, prompt, d, s, max_length) for d, s in zip(dialogues, summaries)]

    def threaded(tokenizer, prompt, dialogues, summaries, max_length):
        with tokenizing_threads(args.threads):
            return encode_examples(tokenizer, prompt, dialogues, summaries, max_length)

    encoders = {"one_call_per_example": one_call_per_example, "batched": encode_examples, "threaded": threaded}
    tokenizer = load_tokenizer(ModelConfig(name_or_path=args.tokenizer))
    train = trainables.data.load_dialogues(DataConfig(path=args.data, test_examples=args.test_examples))["train"]
    times: dict[str, list[float]] = {side: [] for side in sides}
    rows: dict[str, int] = {}
    for round_index in range(args.rounds):
        order = sides if round_index % 2 == 0 else sides[::-1]
        produced = {}
        for side in order:
            trainables.data.encode_examples = encoders[side]  # what tokenize_for_training calls
            began = time.perf_counter()
            produced[side] = trainables.data.tokenize_for_training(train, tokenizer, PromptConfig(), args.max_length,
                                                                   reuse=False)
            times[side].append(time.perf_counter() - began)
        first = produced[sides[0]]
        if any(other["input_ids"] != first["input_ids"] or other["labels"] != first["labels"]
               for other in (produced[side] for side in sides[1:])):
            print("tokenize_time: the sides tokenized differently", file=sys.stderr)
            return 1
        rows = {"train_dialogues": len(train), "rows": len(first)}
    trainables.data.encode_examples = encode_examples
    medians = {side: statistics.median(values) for side, values in times.items()}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "max_length": args.max_length,
        **({"threads": args.threads} if "threaded" in sides else {}),
        **rows,
        "seconds": {side: {"median": medians[side], "min": min(v), "max": max(v), "runs": v}
                    for side, v in times.items()},
        **({"batched_speedup": medians["one_call_per_example"] / medians["batched"]}
           if {"one_call_per_example", "batched"} <= set(sides) else {}),
        **({"threaded_speedup": medians["batched"] / medians["threaded"]} if {"batched", "threaded"} <= set(sides)
           else {}),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{rows['rows']} rows at max_length {args.max_length}: "
          + ", ".join(f"{side} {medians[side]:.2f} s" for side in sides) + f", median of {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
