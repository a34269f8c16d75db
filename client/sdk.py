"""The key holder's side of ciphergrad's gRPC API: ``Client``.

``Client`` keeps the secret key in this process (``core.keys.KeyHolder``) and sends the server only the
public context and ciphertexts. During training it answers the server's masked refresh requests with
fresh encryptions (never decryptions, which would let the server recover the key: IND-CPA-D attacks; see
docs/threat-model.md) and decrypts the per-epoch loss.

It joins a session core (``client.session.Connection``: channel, token, key holder, bytes moved) with one
thin part per service: ``client.datasets``, ``client.training``, ``client.models``, ``client.compute``,
``client.pools`` (the analyst's side of pools; a contributor uses ``client.contributor.Contributor``).
"""

from __future__ import annotations

from ciphergrad.client.compute import ComputeCalls
from ciphergrad.client.models import ModelCalls
from ciphergrad.client.pools import Invitation, InvitationInfo, PoolCalls, PoolInfo, PoolRelease
from ciphergrad.client.session import Transfer, default_parameters
from ciphergrad.client.training import JobState, TrainingCalls, TrainingRun, training_layout
from ciphergrad.core.layout import rotation_steps


class Client(TrainingCalls, ModelCalls, ComputeCalls, PoolCalls):
    """A connection to a ciphergrad server plus the key holder of one session: ``Client(address, tls=...)``
    (``tls`` as for ``client.session.Connection``); the methods come from the service parts."""


__all__ = [
    "Client", "Invitation", "InvitationInfo", "JobState", "PoolInfo", "PoolRelease", "TrainingRun",
    "Transfer", "default_parameters", "rotation_steps", "training_layout",
]
