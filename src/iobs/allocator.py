"""Keep glibc's allocator from handing large blocks back to the kernel after every use.

Why: glibc serves any block above its mmap threshold (dynamic, at most 32 MiB) with a fresh mmap and unmaps it on
free, so every activation or logits tensor of a few tens of MiB is page-faulted and zeroed anew on each forward
pass. On the default run's tiny models that was ~128 million minor page faults and ~17% of the CPU time as system
time (``/usr/bin/time`` over ``benchmarks/bench_default_run.py``). Raising the mmap and trim thresholds keeps those
blocks in the heap for reuse; results are bit-identical (only where memory comes from changes), and the cost is
that up to ``TRIM_BYTES`` of freed memory stays with the process between uses.

glibc reads the same settings from ``MALLOC_MMAP_THRESHOLD_`` etc. at start-up, but a Snakemake job or a console
script cannot rely on its parent's environment, so the process sets them itself through ``mallopt``. Anything but
glibc (macOS, musl) is left alone; ``IOBS_ALLOCATOR=system`` opts out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_BYTES = 1 << 30  # blocks below 1 GiB come from the heap (reused), not from a fresh mmap per allocation
TRIM_BYTES = 1 << 30  # free heap kept before trimming it back to the kernel
TOP_PAD_BYTES = 64 << 20  # grow the heap in 64 MiB steps rather than per request

_applied: bool | None = None


def tune_allocator() -> bool:
    """Apply the thresholds once per process; True when glibc took them. Safe to call repeatedly."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("IOBS_ALLOCATOR", "").lower() == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    settings = ((_M_MMAP_THRESHOLD, MMAP_BYTES), (_M_TRIM_THRESHOLD, TRIM_BYTES), (_M_TOP_PAD, TOP_PAD_BYTES))
    # mallopt returns 1 on success, 0 when glibc refuses a value; all three or the process keeps its defaults' mix.
    _applied = all(libc.mallopt(ctypes.c_int(key), ctypes.c_int(value)) == 1 for key, value in settings)
    return _applied
