"""Write the README's config table from the schema's own descriptions (search/config.py and
trainables/config.py), so the two cannot drift apart; tests/test_config_table.py fails when they do.

    python scripts/config_table.py          # rewrite the table in README.md
    python scripts/config_table.py --check  # exit 1 if README.md's table is not the schema's
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.config import Choice, Range, SweepConfig  # noqa: E402

README = ROOT / "README.md"
BEGIN = "<!-- config table: written by scripts/config_table.py from the schema's descriptions; edit those -->"
END = "<!-- end of config table -->"
LONGEST_DEFAULT = 32


def rows(schema: type[BaseModel] = SweepConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field a user can write, sections expanded."""
    found = []
    for name, field in schema.model_fields.items():
        default = field.default
        if isinstance(default, BaseModel) and not isinstance(default, (Choice, Range)):
            found += rows(type(default), f"{prefix}{name}.")
            continue
        if field.annotation is not None and _is_section(field.annotation):
            found += rows(field.annotation, f"{prefix}{name}.")
            continue
        found.append((f"{prefix}{name}", _shown(default), field.description or ""))
    return found


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _shown(default: Any) -> str:
    if default is PydanticUndefined:
        return "required"
    if isinstance(default, Choice):
        return f"`{{choice: {_flow(default.choice)}}}`"
    if isinstance(default, Range):
        return f"`{{low: {default.low:g}, high: {default.high:g}, log: {str(default.log).lower()}}}`"
    text = _flow(default)
    if len(text) > LONGEST_DEFAULT:
        text = text[: LONGEST_DEFAULT - 1] + "…"
    return f"`{text}`"


def _flow(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value.replace("\n", "\\n")
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def table() -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{key}` | {default} | {meaning.replace('|', '/')} |" for key, default, meaning in rows()]
    return "\n".join([BEGIN, *lines, END])


def readme_with_table(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README}: no config table markers ({BEGIN!r} ... {END!r})")
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    return before + table() + after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's table differs from the schema")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    wanted = readme_with_table(text)
    if args.check:
        if wanted != text:
            print("README.md's config table differs from the schema: run python scripts/config_table.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
