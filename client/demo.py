"""`make demo`: the Ames reference training, encrypted vs its torch twin.

The key holder and the computing party are separate objects that exchange only bytes; the computing
party never holds the secret key.
"""

from __future__ import annotations

from core.compare import compare_linear_regression, r2_score
from core.data import load_ames, with_intercept
from core.linear import LinearRegressionConfig


def main() -> None:
    data = load_ames()
    X = with_intercept(data.X)
    print(f"Ames housing: {X.shape[0]} rows x {X.shape[1] - 1} features + bias, min-max scaled")
    print("full-batch gradient descent, learning rate 0.5, 50 epochs, weights ~ N(0, 1) (seed 0)\n")
    run = compare_linear_regression(X, data.y, LinearRegressionConfig(learning_rate=0.5, epochs=50, seed=0))
    print(run.table())
    print(f"\nR^2 encrypted {r2_score(X, data.y, run.encrypted_weights):.6f}, torch {r2_score(X, data.y, run.torch_weights):.6f}")


if __name__ == "__main__":
    main()
