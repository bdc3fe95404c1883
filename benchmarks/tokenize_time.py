"""What a fresh trial worker pays to tokenize its training split (datasets' cache not used), batched
(trainables.prompt.encode_examples, as trials run it) against one tokenizer call per example (as
trials ran it before 2026-12-04, and as benchmarks/plain_ray_tune.py's by-hand trials still do), by
turns in one process.

    python benchmarks/tokenize_time.py --data ../shared/data/dialogsum \
        --tokenizer ../shared/models/smollm2-135m-instruct-tokenizer --rounds 4 --out tokenize.json

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

SIDES = ("one_call_per_example", "batched")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a dialogue folder or file (data.path)")
    parser.add_argument("--tokenizer", required=True, help="a model or tokenizer folder")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per training example (default 512)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both sides, by turns (default 4)")
    parser.add_argument("--test-examples", type=int, default=500,
                        help="train dialogues held out as a trial holds them out (data.test_examples, default 500)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
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
    from trainables.prompt import encode_example, encode_examples, load_tokenizer

    def one_call_per_example(tokenizer, prompt, dialogues, summaries, max_length):
        return [encode_example(tokenizer, prompt, d, s, max_length) for d, s in zip(dialogues, summaries)]

    encoders = {"one_call_per_example": one_call_per_example, "batched": encode_examples}
    tokenizer = load_tokenizer(ModelConfig(name_or_path=args.tokenizer))
    train = trainables.data.load_dialogues(DataConfig(path=args.data, test_examples=args.test_examples))["train"]
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    rows: dict[str, int] = {}
    for round_index in range(args.rounds):
        order = SIDES if round_index % 2 == 0 else SIDES[::-1]
        produced = {}
        for side in order:
            trainables.data.encode_examples = encoders[side]  # what tokenize_for_training calls
            began = time.perf_counter()
            produced[side] = trainables.data.tokenize_for_training(train, tokenizer, PromptConfig(), args.max_length,
                                                                   reuse=False)
            times[side].append(time.perf_counter() - began)
        first, second = (produced[side] for side in SIDES)
        if first["input_ids"] != second["input_ids"] or first["labels"] != second["labels"]:
            print("tokenize_time: the two sides tokenized differently", file=sys.stderr)
            return 1
        rows = {"train_dialogues": len(train), "rows": len(first)}
    trainables.data.encode_examples = encode_examples
    medians = {side: statistics.median(values) for side, values in times.items()}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "max_length": args.max_length,
        **rows,
        "seconds": {side: {"median": medians[side], "min": min(v), "max": max(v), "runs": v}
                    for side, v in times.items()},
        "batched_speedup": medians["one_call_per_example"] / medians["batched"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{rows['rows']} rows at max_length {args.max_length}: one call per example "
          f"{medians['one_call_per_example']:.2f} s, batched {medians['batched']:.2f} s "
          f"({result['batched_speedup']:.2f}x), median of {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
