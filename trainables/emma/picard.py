"""EMMA's per-token recurrence on the CPU as a C++ extension (`picard.cpp`), built on first use.

`deq_forward` / `deq_backward` run the per-token Picard iterations and their BPTT, `liquid_forward` /
`liquid_backward` the liquid cell's, with MKL's gemm and vector math called directly (the kernels `torch.addmm`
and `torch.tanh` reach) and without the per-operation cost of eager PyTorch (notes/emma.md). `model.Recurrence`
uses them for CPU tensors when `kernels()` has them, and its eager loops otherwise (CUDA, or a machine without a
C++ compiler). Both give the same results up to float rounding (tests/test_emma_model.py).
"""

from __future__ import annotations

import subprocess
import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("picard.cpp")


@cache
def kernels() -> ModuleType | None:
    """The built extension (cached by torch under ~/.cache/torch_extensions), or None if it cannot be built."""
    try:
        from torch.utils.cpp_extension import load
        return load("emma_picard", sources=[str(SOURCE)], extra_cflags=["-O3", "-ffp-contract=off"])
    except (ImportError, OSError, RuntimeError, subprocess.SubprocessError) as err:   # no compiler, ninja or build
        warnings.warn(f"emma: the C++ Picard kernel could not be built, the eager loop runs instead (slower): {err}",
                      stacklevel=2)
        return None
