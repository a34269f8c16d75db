"""`ciphergrad compare --quick --scaling` through a child-process server: the report's files, encrypted
results against their twins at stated tolerances, valid PNGs, and bad input as exit code 2."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from ciphergrad.client.cli import main as cli_main
from ciphergrad.client.compare import main
from ciphergrad.client.compare.scaling import log_slope
from ciphergrad.client.compare.tasks import TASK_NAMES

# End-to-end through child processes (or a Ray cluster): make test-slow, and CI after make test.
pytestmark = pytest.mark.slow

# |encrypted - plaintext| allowed for the quantity each task compares (TaskResult.diff_of), by its first word.
DIFF_TOLERANCE = {
    "weights": 1e-4,  # gradient descent through refreshes: measured ~1e-7
    "predictions": 1e-4,
    "probabilities": 1e-4,
    "logits": 1e-3,  # |logits| reach ~150: CKKS error is relative to the magnitude
    "statistics": 1e-4,  # wine's uncentred variance cancellation: measured 3.5e-5
    "squared": 1e-2,  # squared distances up to ~10^3 on digits' PCA components
}
METRIC_TOLERANCE = 1e-4  # R² and accuracies: the same decisions both ways


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["--quick", "--scaling", "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def results(report: Path) -> dict:
    return json.loads((report / "compare.json").read_text())


def test_every_task_ran_and_matches_its_twin(results: dict) -> None:
    tasks = {task["name"]: task for task in results["tasks"]}
    assert tuple(tasks) == TASK_NAMES
    for name, task in tasks.items():
        tolerance = DIFF_TOLERANCE[task["diff_of"].split()[0]]
        assert 0 <= task["max_abs_diff"] <= tolerance, (name, task["max_abs_diff"], task["diff_of"])
        assert abs(task["encrypted_metric"] - task["plain_metric"]) <= METRIC_TOLERANCE, name
        assert task["encrypted_seconds"] > 0 and task["plain_seconds"] > 0, name
        assert task["bytes_up"] > 0 and task["bytes_down"] > 0, name
        assert task["server_peak_mb"] > 100, name  # the child server's VmHWM: TenSEAL and keys alone exceed this


def test_training_tasks_carry_loss_curves_and_operations(results: dict) -> None:
    tasks = {task["name"]: task for task in results["tasks"]}
    for name in ("ames-writeup", "ames-converged-gd", "ames-converged-gram", "logistic-cancer"):
        losses = tasks[name]["losses"]
        assert len(losses["encrypted"]) == len(losses["torch"]) > 1
        np.testing.assert_allclose(losses["encrypted"], losses["torch"], rtol=1e-4, err_msg=name)
        assert tasks[name]["operations"]["rotations"] > 0 and tasks[name]["operations"]["refreshes"] > 0
    for solver in ("gd", "gram", "normal"):
        converged = tasks[f"ames-converged-{solver}"]
        assert abs(converged["encrypted_metric"] - converged["optimum"]) < 1e-3, solver  # R² 0.7616 = least squares
    assert not tasks["ames-converged-normal"]["losses"]  # one round trip, no epochs


def test_scaling_sweep_is_measured(results: dict) -> None:
    runs = results["scaling"]["runs"]
    assert {run["solver"] for run in runs} == {"gd", "gram"}
    for solver in ("gd", "gram"):
        rows = [run["rows"] for run in runs if run["solver"] == solver]
        assert rows == sorted(rows) and len(rows) == 3
    slopes = results["scaling"]["slopes"]
    # Row packing ("gd"): the upload grows in proportion to the rows (4x the rows, 4x the ciphertexts).
    assert slopes["gd"]["upload_mb"] == pytest.approx(1.0, abs=0.1)
    # Column packing ("gram"): up to 4,096 rows every column is one ciphertext, whatever the rows.
    assert slopes["gram"]["upload_mb"] == pytest.approx(0.0, abs=0.05)
    assert all(run["epoch_seconds"] > 0 and run["server_peak_mb"] > 0 for run in runs)


def test_report_files_and_pngs(report: Path, results: dict) -> None:
    pngs = sorted(report.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"time_ratios.png", "metrics.png", "scaling.png", "loss_ames-writeup.png"} <= names
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        pixels = image.imread(png)
        assert pixels.shape[1] >= 800 and pixels.shape[0] >= 300, png
        assert pixels.std() > 0.05, png  # not a blank canvas
    page = (report / "index.html").read_text()
    markdown = (report / "compare.md").read_text()
    for name in names:
        assert f'src="{name}"' in page and f"({name})" in markdown
    for task in results["tasks"]:
        assert f"| {task['name']} |" in markdown and f"<td>{task['name']}</td>" in page


def test_log_slope_recovers_a_power_law() -> None:
    rows = [1_000, 10_000, 100_000]
    assert log_slope(rows, [2e-3 * r**1.5 for r in rows]) == pytest.approx(1.5)
    assert log_slope(rows, [None, None, None]) is None


def test_unknown_task_is_exit_2_naming_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["compare", "knn-mnist", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'knn-mnist'" in err
    assert all(name in err for name in TASK_NAMES)


def test_unreachable_server_is_exit_2_naming_the_address(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    assert main(["--server", address, "--no-progress", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and address in err
    assert not (tmp_path / "compare.json").exists()


@pytest.mark.slow
def test_demo_shows_the_unconverged_writeup_then_convergence(capsys: pytest.CaptureFixture[str]) -> None:
    from ciphergrad.client.demo import main as demo_main

    assert demo_main() == 0
    out = capsys.readouterr().out
    assert "UNCONVERGED: after 50 epochs R² is 0.09" in out
    assert "CONVERGED: R² 0.7616 = least squares 0.7616" in out
