"""Per-session CKKS engines, loaded from the stored public context and kept in a small LRU.

Deserializing a context with Galois keys takes a noticeable fraction of a second (holding the GIL, so the
server's event loop waits meanwhile) and tens of MB, so uploads and predictions reuse engines; training jobs
take a ``fork``: the cached keys with operation counters of their own (reported per epoch, they must not mix
with other calls), so a job costs neither a reload nor a second copy of the keys.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.server.store.store import Store

# An Ames-sized session's engine holds ~25 MB (its Galois keys); 16 of them keep the engines of as many
# sessions training at once (with 4, eight concurrent sessions reloaded their contexts job after job).
ENGINES_CACHED = 16


class EngineCache:
    def __init__(self, store: Store, size: int = ENGINES_CACHED,
                 track: Callable[[OpCounts], None] | None = None) -> None:
        self._store = store
        self._track = track  # told every new engine's operation counters (the metrics endpoint)
        # Told the context file of every session whose engine this cache loads (an upload, a prediction):
        # the executor's warm(), so that a worker holds the context too before the session's first job.
        self.on_load: Callable[[Path], None] | None = None
        self._size = size
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Engine:
        with self._lock:
            if session_id in self._engines:
                self._engines.move_to_end(session_id)
                return self._engines[session_id]
        engine = self.load(session_id)
        if self.on_load is not None:
            self.on_load(self._store.context_path(session_id))
        with self._lock:
            self._engines[session_id] = engine
            while len(self._engines) > self._size:
                self._engines.popitem(last=False)
        return engine

    def load(self, session_id: str) -> Engine:
        """A fresh engine of its own (not cached)."""
        engine = Engine.from_public_context(self._store.context_path(session_id).read_bytes())
        if self._track is not None:
            self._track(engine.counts)
        return engine

    def fork(self, session_id: str) -> Engine:
        """An engine of its own sharing the cached one's loaded context: fresh operation counters, no reload."""
        engine = dataclasses.replace(self.get(session_id), counts=OpCounts())
        if self._track is not None:
            self._track(engine.counts)
        return engine

    def tally(self) -> OpCounts:
        """Fresh operation counters the metrics endpoint follows, for work whose engine lives elsewhere (a Ray
        server's one-pass jobs: their trainers run on pool workers)."""
        counts = OpCounts()
        if self._track is not None:
            self._track(counts)
        return counts

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._engines.pop(session_id, None)
