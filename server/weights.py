"""What the server computes from a dictionary's weights (normalized decoders for nearest features, a
replacement model's decoder norms), computed once per dictionary and kept.

A value is keyed by the dictionary folder and its config's file signature, so a re-saved dictionary is
computed afresh; at most `max_bytes` of values are kept, least recently used dropped first. One
computation per dictionary at a time: other requests for it wait for that one rather than loading the
weights again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

from .results import DictionaryInfo

T = TypeVar("T")


class WeightsCache(Generic[T]):
    def __init__(self, compute: Callable[[DictionaryInfo], T], size: Callable[[T], int], max_bytes: int) -> None:
        self.compute, self.size, self.max_bytes = compute, size, max_bytes
        self._lock = threading.Lock()
        self._values: OrderedDict[tuple, T] = OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}

    def get(self, info: DictionaryInfo) -> T:
        key = (str(info.folder.resolve()), info.signature)
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = self.compute(info)
            with self._lock:
                self._loading.pop(key, None)
                self._values[key] = value
                total = sum(self.size(v) for v in self._values.values())
                while total > self.max_bytes and len(self._values) > 1:
                    _, dropped = self._values.popitem(last=False)
                    total -= self.size(dropped)
        return value
