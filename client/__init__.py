"""ciphergrad client: the key holder's SDK (``Client``), scikit-learn-style estimators, pool contributors and
the CLI. Its public names are ``ciphergrad``'s (``from ciphergrad import Client``), loaded on first use: a
contributor process that needs only ``Contributor`` does not import scikit-learn."""

from __future__ import annotations

from typing import Any

import ciphergrad

__all__ = ciphergrad.__all__


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'ciphergrad.client' has no attribute {name!r}")
    return getattr(ciphergrad, name)
