"""Per-thread scratch objects reused across images in per-image hot loops.

A 224 x 224 float64 map is 400 KB: glibc serves allocations of that size with fresh `mmap`
pages, so every temporary of that size costs ~100 page faults per image (most of the time of
a vectorized per-image kernel on a virtual machine). Hot loops keep such arrays here instead.
Scratch contents are undefined on entry and must never escape to a caller that keeps them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")
_MAX_ENTRIES = 16  # a handful of (kind, shape) combinations is all one process evaluates
_local = threading.local()


def per_thread(key: Hashable, factory: Callable[[], T]) -> T:
    """This thread's object for `key`, built by `factory()` on first use (LRU-bounded)."""
    cache: OrderedDict | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = OrderedDict()
    value = cache.get(key)
    if value is None:
        value = cache[key] = factory()
        if len(cache) > _MAX_ENTRIES:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return value
