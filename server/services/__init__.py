"""One module per proto service (``ciphergrad.v1``): thin adapters from protobuf to ``core`` and the store."""
