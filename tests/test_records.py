"""Server records: row form and back is the identity; legacy rows (before layouts were stored) still load."""

from __future__ import annotations

from ciphergrad.core import plan
from ciphergrad.core.layout import Tile
from ciphergrad.server.store.records import DatasetLayout, DatasetRecord, JobRecord, ModelRecord, SessionRecord
from ciphergrad.server.store.store import Store


def test_records_survive_the_store(tmp_path) -> None:
    store = Store(tmp_path)
    session = SessionRecord("s1", "hash", "me", plan(3), 1234, 1.0)
    store.add_session(session)
    assert store.session("s1") == session and store.session_by_token_hash("hash") == session
    layout = DatasetLayout.of(Tile(16, 1), features_only=True)
    dataset = DatasetRecord("d1", "s1", "data", ("a", "b"), 10, 2, 0, 1, 99, 3, 2.0, layout)
    store.add_dataset(dataset)
    assert store.datasets("s1") == [dataset] and dataset.to_proto().packing == 2  # PACKING_COLUMNS
    job = JobRecord("j1", "s1", "d1", 1, {"epochs": 3}, 5, 3, 3.0, 3.0)
    store.add_job(job)
    updated = store.update_job("j1", epoch=2)
    assert updated is not None and updated.epoch == 2 and updated.config == {"epochs": 3}
    model = ModelRecord("m1", "s1", "j1", "d1", 1, 0.5, {"features": 2}, ("a", "b"), 4.0)
    store.add_model(model, b"blob")
    assert store.model("m1") == model and store.model_blob(model) == b"blob"
    assert model.to_proto().input_columns == 2 and not model.server_owned
    store.delete_session("s1")
    assert store.dataset("d1") is None and store.job("j1") is None and store.model("m1") is None
    store.close()


def test_legacy_dataset_rows_have_an_empty_layout() -> None:
    assert DatasetLayout.from_json("{}") == DatasetLayout() and DatasetLayout().to_json() == "{}"
    assert DatasetLayout.from_json(DatasetLayout.of(Tile(8, 4), False, True).to_json()).reference_set
