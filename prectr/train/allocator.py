"""The C library's allocator, kept from handing freed memory back between training steps.

A training step allocates its activations and gradients, frees them, and allocates the same
sizes again the next step. glibc's ``malloc`` hands the free memory at the top of its heap
back to the system as soon as a little is free, and takes it again the next step: new pages,
each zeroed by the kernel on its first touch. ``M_TOP_PAD`` (mallopt(3)) makes ``malloc`` keep
that much free memory when it trims the heap (and take that much more when it grows it), so
the next step reuses the pages. A run of 32 PRECTR-V2 steps with the student encoder
(`small`, 1 thread; its setup included) made 4,696 ``brk`` calls and 7.3M page faults by
default, 16 and 2.2M with 512 MB kept (docs/fidelity.md, "The allocator kept from handing a
step's memory back"). Setting it also freezes glibc's mmap threshold where it stands (it
no longer rises with the sizes freed), as mallopt(3) says of every such parameter.

The setting is process-wide and concerns glibc alone: with another C library (musl, macOS,
Windows) :func:`keep_freed_memory` changes nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

M_TOP_PAD = -2  # glibc's <malloc.h>
MAX_MB = (2**31 - 1) // 2**20  # mallopt takes a C int of bytes
KEEP_FREED_MB = 512  # train.keep_freed_mb's default


def keep_freed_memory(megabytes: int) -> bool:
    """Let ``malloc`` keep up to ``megabytes`` MB of freed memory for reuse instead of returning
    it to the system (glibc's ``M_TOP_PAD``); ``0`` leaves the C library's default. The process
    holds at most that much more memory than it uses. Returns whether the allocator was
    changed: false for 0, or where the C library is not glibc."""
    if not 0 <= megabytes <= MAX_MB:
        raise ValueError(f"keep_freed_mb must be between 0 and {MAX_MB}, not {megabytes}")
    libc = _glibc()
    if not megabytes or libc is None:
        return False
    if not libc.mallopt(M_TOP_PAD, megabytes * 2**20):
        raise OSError(f"mallopt(M_TOP_PAD, {megabytes} MB) failed")
    return True


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc
