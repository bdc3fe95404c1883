"""bitsandbytes without the compiler's import: bitsandbytes 0.50 wraps four of its CPU fallback
kernels in torch.compile as it is imported, and torch.compile, even before any call, imports
TorchDynamo and TorchInductor. This defers each of those torch.compile calls to the wrapped
function's first call, where it compiles as before; a process that never calls them (a GPU
trial, whose kernels are CUDA's, or a CPU one, whose 4-bit kernels are bitsandbytes' own C++)
never imports the compiler for them.
"""

import functools
import importlib.abc
import importlib.machinery
import sys

DEFERRED_MODULE = "bitsandbytes"


def deferred_compile(real_compile):
    """torch.compile as bitsandbytes calls it (a function, or no function and then one), compiling on first call."""

    def compile_on_first_call(fn=None, **kwargs):
        if fn is None:
            return lambda f: compile_on_first_call(f, **kwargs)
        compiled = None

        @functools.wraps(fn)
        def call(*args, **call_kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = real_compile(fn, **kwargs)
            return compiled(*args, **call_kwargs)

        return call

    return compile_on_first_call


class _DeferCompileWhileImporting(importlib.abc.MetaPathFinder):
    """Finds bitsandbytes as Python would and, while its package runs, lends it the deferring torch.compile."""

    def find_spec(self, name, path, target=None):
        if name != DEFERRED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_with_deferred_compile(module):
            import torch

            real = torch.compile
            torch.compile = deferred_compile(real)
            try:
                exec_module(module)
            finally:
                torch.compile = real

        spec.loader.exec_module = exec_with_deferred_compile
        return spec


def _installed() -> _DeferCompileWhileImporting | None:
    return next((finder for finder in sys.meta_path if isinstance(finder, _DeferCompileWhileImporting)), None)


def install() -> None:
    if _installed() is None:
        sys.meta_path.insert(0, _DeferCompileWhileImporting())


def uninstall() -> None:
    """bitsandbytes imported as it ships, compiler and all (benchmarks/worker_start.py's baseline side)."""
    finder = _installed()
    if finder is not None:
        sys.meta_path.remove(finder)
