"""trainables.lazy_compile: bitsandbytes' import-time torch.compile calls wait for the wrapped
function's first call, and then compile exactly as before (the real torch.compile, eager backend)."""

import sys

import pytest
import torch

from trainables import lazy_compile

pytestmark = pytest.mark.unit


def _frames() -> int:
    from torch._dynamo.utils import counters

    return counters["frames"]["total"]


def _double_plus_one(x):
    return x * 2 + 1


@pytest.mark.parametrize("as_decorator", [False, True], ids=["called", "decorator"])
def test_a_deferred_compile_compiles_nothing_until_the_first_call_and_then_once(as_decorator):
    torch._dynamo.reset()
    defer = lazy_compile.deferred_compile(torch.compile)
    before = _frames()
    fn = defer(backend="eager")(_double_plus_one) if as_decorator else defer(_double_plus_one, backend="eager")
    assert _frames() == before and fn.__name__ == "_double_plus_one"
    x = torch.arange(4.0)
    assert torch.equal(fn(x), _double_plus_one(x))
    assert _frames() == before + 1  # compiled on its first call
    assert torch.equal(fn(x + 1), _double_plus_one(x + 1)) and _frames() == before + 1  # and only then


def test_the_finder_is_installed_once_and_finds_nothing_but_bitsandbytes():
    lazy_compile.install()
    lazy_compile.install()
    finders = [f for f in sys.meta_path if isinstance(f, lazy_compile._DeferCompileWhileImporting)]
    assert len(finders) == 1 and sys.meta_path[0] is finders[0]  # ahead of the path finder it defers to
    assert finders[0].find_spec("json", None) is None
    spec = finders[0].find_spec("bitsandbytes", None)
    assert spec.name == "bitsandbytes" and spec.loader.exec_module.__name__ == "exec_with_deferred_compile"
