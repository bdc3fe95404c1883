"""The config documents itself: every field a user can write has a description, and the README's
config table is written from those descriptions (scripts/config_table.py), so it cannot drift."""

import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

sys.path.insert(0, str(ROOT / "scripts"))
import config_table  # noqa: E402


def test_every_field_a_user_can_write_says_what_it_is():
    rows = config_table.rows()
    assert len(rows) > 50 and {key for key, _, _ in rows} >= {"name", "training.micro_batch_size", "search.lora_r"}
    undocumented = [key for key, _, meaning in rows if len(meaning) < 20]
    assert not undocumented, undocumented


def test_the_readmes_config_table_is_the_one_the_schema_writes():
    done = subprocess.run([sys.executable, "scripts/config_table.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_the_check_finds_a_table_edited_by_hand():
    readme = (ROOT / "README.md").read_text()
    edited = readme.replace("| `training.micro_batch_size` | `4` |", "| `training.micro_batch_size` | `8` |")
    assert edited != readme and config_table.readme_with_table(edited) == readme
