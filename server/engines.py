"""Per-session CKKS engines, loaded from the stored public context and kept in a small LRU.

Deserializing a context with Galois keys takes a noticeable fraction of a second (holding the GIL, so the
server's event loop waits meanwhile) and tens of MB, so uploads and predictions reuse engines; training jobs
get engines of their own (their operation counters are reported per epoch and must not mix with other
calls) that share the cached context's keys: a job costs neither a second copy of the keys nor a reload.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from core.engine import Engine, OpCounts
from server.storage import Store


class EngineCache:
    def __init__(self, store: Store, size: int = 4, track: Callable[[OpCounts], None] | None = None) -> None:
        self._store = store
        self._track = track  # told every new engine's operation counters (the metrics endpoint)
        self._size = size
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Engine:
        with self._lock:
            if session_id in self._engines:
                self._engines.move_to_end(session_id)
                return self._engines[session_id]
        engine = self._track_new(Engine.from_public_context(self._store.context_path(session_id).read_bytes()))
        with self._lock:
            self._engines[session_id] = engine
            while len(self._engines) > self._size:
                self._engines.popitem(last=False)
        return engine

    def load(self, session_id: str) -> Engine:
        """An engine of its own (not cached, its own operation counts) on the session's shared context."""
        return self._track_new(Engine(self.get(session_id).context))

    def _track_new(self, engine: Engine) -> Engine:
        if self._track is not None:
            self._track(engine.counts)
        return engine

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._engines.pop(session_id, None)
