"""ciphergrad.client.local_server: a real server child process, serving while the block runs and gone afterwards."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from ciphergrad.client import Client, local_server
from ciphergrad.core.layout import choose_tile


def test_local_server_serves_then_stops() -> None:
    with local_server() as address:
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        with Client(address) as client:
            client.create_session(tiles=[choose_tile((8, 2), 4096, "rows")])
            dataset = client.upload(np.ones((8, 2)), np.ones(8))
            assert client.list_datasets()[0].dataset_id == dataset.dataset_id
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=2)
