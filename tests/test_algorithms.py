"""The algorithm registry: every entry is reachable on the wire, and its parts fit together."""

from __future__ import annotations

import numpy as np
import pytest

from ciphergrad.core import algorithms
from ciphergrad.core.errors import ParameterError
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2


def test_every_entry_has_its_enum_value_and_back():
    assert set(algorithms.ALGORITHMS) == {"linear", "logistic"}
    for entry in algorithms.ALGORITHMS.values():
        value = codec.algorithm_to_proto(entry)
        assert codec.algorithm_from_proto(value) is entry
    assert codec.algorithm_from_proto(types_pb2.ALGORITHM_MLP) is None  # inference only
    assert codec.algorithm_from_proto(999) is None


@pytest.mark.parametrize("name", sorted(algorithms.ALGORITHMS))
def test_entry_parts_fit_together(name):
    entry = algorithms.get(name)
    config = entry.config(epochs=2)
    assert algorithms.for_config(config) is entry
    assert issubclass(entry.trainer_for(config), entry.trainer)
    assert entry.config.from_dict(config.to_dict()) == config
    assert "intercept_column" in entry.config_fields() and entry.levels_per_step >= 2
    X = np.random.default_rng(0).normal(size=(16, 3))
    y = (X[:, 0] > 0).astype(float)
    fit = entry.twin(X, y, config)
    assert fit.weights.shape == (3,) and len(fit.losses) == 2
    # No algorithm's hyperparameters order the shuffles: the key holder draws them (core.randomness).
    assert not any("seed" in name and name != "init_seed" for name in entry.config_fields())
    assert not hasattr(entry, "shuffle_orders")


def test_decode_divides_out_the_weight_scale():
    values = np.array([[0.5, -1.0]])
    assert np.allclose(algorithms.get("linear").decode(values, 0.25), [2.0, -4.0])
    assert np.allclose(algorithms.get("logistic").decode(values, 1 / 8), [4.0, -8.0])  # w' = w / bound


def test_unknown_algorithm_names_the_choices():
    with pytest.raises(ParameterError, match="use one of"):
        algorithms.get("forest")


def test_trainer_follows_the_configs_solver():
    from dataclasses import replace

    from ciphergrad.core.linear import LinearRegressionConfig, LinearTrainer

    class OtherTrainer(LinearTrainer):
        pass

    entry = replace(algorithms.get("linear"), solvers={"gram": OtherTrainer})
    assert entry.trainer_for(LinearRegressionConfig()) is LinearTrainer
    assert entry.trainer_for(LinearRegressionConfig(solver="gram")) is OtherTrainer
