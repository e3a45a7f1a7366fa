"""Keep freed memory in the process, so a training step does not page-fault its activations in again.

glibc's malloc serves every block above its mmap threshold (128 KiB, raised on the fly to at most
32 MiB) with a fresh ``mmap`` and gives it back to the kernel on ``free``; it also trims the top of the
heap back to the kernel. A training step allocates and frees the same large tensors every time (on
SmolLM2-135M, batch 4 x 256: the (1024, 49152) logits and their gradient, 200 MB each, and every
layer's activations), so each step touches about 800 MB of new pages: about 200,000 minor page faults
a step (``getrusage``), which cost time and scatter a step's time by +-10% on this project's 2-core
machine.

:func:`keep_freed_memory` turns both off with ``mallopt`` (M_MMAP_MAX = 0: large blocks come from the
heap too; M_TRIM_THRESHOLD at SIZE_MAX: the heap is never trimmed; a step frees more than the 2 GiB an
int threshold could hold), so after a few steps the heap stops growing and steps reuse its pages: no
page faults. This is what PyTorch's CPU launcher
(``torch.backends.xeon.run_cpu``) gets by preloading jemalloc or tcmalloc; mallopt needs no extra
library. The cost is memory: the process keeps its peak resident size until it ends, and the heap
fragments (torch allocates 64-byte aligned blocks; the slivers ``posix_memalign`` splits off keep a freed
block from merging back), so the peak is higher. Measured with ``QTHA_KEEP_FREED_MEMORY=0|1 qtha-eval
bench train-step --r 4 --layers 4 --repeats 2 --pairs 6`` (SmolLM2-135M, batch 4 x 256), back to back:
LoRA 3.92 -> 3.33 s a step and QTHA 3.97 -> 3.62 s, 221,000 -> 16,000 minor page faults a step (none
once the heap has settled), peak 3.23 -> 3.60 GB (LoRA). Huge pages (``THP_MEM_ALLOC_ENABLE=1``) cut
the faults but not the time, and raising only the mmap threshold to its 32 MiB maximum leaves the
vocabulary-sized blocks mapped afresh (one loop of 8 LoRA steps each). Set ``QTHA_KEEP_FREED_MEMORY=0``
to keep glibc's defaults; off glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["ENV", "keep_freed_memory"]

ENV = "QTHA_KEEP_FREED_MEMORY"
"""Environment variable: ``0`` keeps glibc's allocator defaults."""

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_MAX = -4
_NEVER = -1  # mallopt takes an int; glibc stores the trim threshold as a size_t, so -1 is SIZE_MAX


def keep_freed_memory() -> bool:
    """Make this process's malloc keep freed memory for reuse (see the module docstring); idempotent.

    Returns whether it took effect: False off glibc or when ``QTHA_KEEP_FREED_MEMORY=0``.
    """
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt returns 1 on success
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER))
