"""The torch side of encrypted inference: polynomial activations as ``nn.Module``s, the export of an
``nn.Sequential`` to ``core.inference.MLP`` and its float64 twin. Importing this module imports torch;
``core.inference`` re-exports these names and loads this module on first use.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ciphergrad.core.errors import ParameterError
from ciphergrad.core.inference import MLP
from ciphergrad.core.polynomial import Polynomial

__all__ = ["PolynomialActivation", "Square", "mlp_from_torch", "mlp_torch", "train_square_mlp"]


class Square(nn.Module):
    """x**2: the cheapest activation on ciphertexts (1 level), as in CryptoNets."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class PolynomialActivation(nn.Module):
    """``sum_k c_k x**k`` (e.g. a ``core.polynomial`` fit) as a torch activation."""

    def __init__(self, poly: Polynomial) -> None:
        super().__init__()
        self.poly = poly

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.poly(x)


def mlp_from_torch(module: nn.Module) -> MLP:
    """Export an ``nn.Sequential`` of ``nn.Linear`` layers separated by ``Square`` / ``PolynomialActivation``."""
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    activations: list[Polynomial | None] = []
    expect_linear = True
    for child in module.children() if isinstance(module, nn.Sequential) else [module]:
        if isinstance(child, nn.Linear):
            if not expect_linear:
                raise ParameterError("two linear layers in a row: merge them or put an activation between")
            w = child.weight.detach().to(torch.float64).numpy().T.copy()
            b = child.bias.detach().to(torch.float64).numpy().copy() if child.bias is not None else np.zeros(w.shape[1])
            layers.append((w, b))
            expect_linear = False
        elif isinstance(child, Square | PolynomialActivation):
            if expect_linear:
                raise ParameterError("an activation must follow a linear layer")
            activations.append(child.poly if isinstance(child, PolynomialActivation) else None)
            expect_linear = True
        else:
            raise ParameterError(
                f"{type(child).__name__} has no ciphertext form: use nn.Linear with Square or "
                "PolynomialActivation (ReLU/tanh/sigmoid need a polynomial stand-in)"
            )
    if not layers or expect_linear:
        raise ParameterError("the network must start and end with an nn.Linear layer")
    return MLP(tuple(layers), tuple(activations))


def mlp_torch(module: nn.Module, X: np.ndarray) -> np.ndarray:
    """Torch twin: the module itself in float64."""
    twin = copy.deepcopy(module).to(torch.float64)  # a copy: the caller's module keeps its dtype
    with torch.no_grad():
        return twin(torch.as_tensor(np.asarray(X, dtype=np.float64))).numpy()


def train_square_mlp(X: np.ndarray, y: np.ndarray, seed: int, hidden: int = 32, steps: int = 200) -> nn.Module:
    """A float64 ``Linear -> Square -> Linear`` classifier trained in torch (Adam, cross-entropy): the model
    owner's network that the benchmarks and comparisons then run encrypted (3 levels)."""
    torch.manual_seed(seed)
    classes = int(np.max(y)) + 1
    model = nn.Sequential(nn.Linear(X.shape[1], hidden), Square(), nn.Linear(hidden, classes)).to(torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    Xt, yt = torch.as_tensor(np.asarray(X, dtype=np.float64)), torch.as_tensor(np.asarray(y, dtype=np.int64))
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(Xt), yt)
        loss.backward()
        opt.step()
    return model
