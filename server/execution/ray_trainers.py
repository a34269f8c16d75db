"""A job's trainer on a Ray pool worker: the epochs' updates, the masked refreshes' arithmetic and the checks
of the key holder's replies run there, next to the session's loaded context, and the server process relays.

Which jobs: all of them (``ray_jobs.job_trainer`` says where each runs). One-pass trainers (``streams_rows``:
``core.gram_training.GramTrainer``, ``NormalSolver`` and its subclasses) need the data only through their
statistics, which the pass leaves on a worker anyway (``RayExecutor.gram_finish``); per-row trainers get the
job's whole table loaded on their worker (minibatches, shuffles, refinement, a table of one shard), or the
job's shards on other workers when the host is the pool's driver (full batch over several shards). Such a
job's trainer lives on a worker for the job (state across steps: a ``TrainerHost`` inside the
``BlockWorker`` actor, by key) and the job runner drives a ``RemoteTrainer``, which has the runner's trainer
interface but holds no context and parses no ciphertext: its matrices are ``core.flat.FlatMatrix`` bytes
(checkpoints, losses, the final weights).

How an epoch runs: the host runs ``trainer.run_epoch()`` on a thread of its own, whose key-holder link
(``WorkerLink``) turns each question into an event: ``("refresh", masked bytes)`` or ``("solve", the normal
system's matrices as bytes)``. The actor call that started or answered the epoch returns with that event; the
server relays it to the client (``server.jobs.links.StreamRefresh.refresh_reply`` / ``normal_reply``, which
check ids and presence only) and answers with the client's reply as serialized proto bytes, which the worker
parses and checks (``server.rpc.validation.reply_matrix``) before the trainer sees it. A bad reply fails the
job with the validation layer's status, as in-process.

Invariants: a pool worker runs one call at a time, and while a call runs the trainer thread is the only one
computing (the call waits for its next event), so a worker still never runs two HE computations at once (the
driver runs its jobs' calls on threads, which take turns under its GIL);
the masks of masked refreshes are drawn and removed on the worker and never leave it (the server relays only
masked ciphertexts, as before); no secret key exists here (the worker's context is public); a job that ends
any way (done, failed, paused, cancelled) releases its host, which stops a thread still waiting for a reply.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ciphergrad.core.engine import Engine, OpCounts
from ciphergrad.core.flat import FlatMatrix
from ciphergrad.core.tensor import EncryptedMatrix
from ciphergrad.core.training import EpochResult
from ciphergrad.server.jobs.links import refined_solution
from ciphergrad.server.rpc import validation
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2 as training_pb


class Stopped(Exception):
    """The job let go of its host while its trainer waited for the key holder."""


def _portable(value: Any) -> Any:
    return value.to_bytes() if isinstance(value, EncryptedMatrix) else value


class WorkerLink:
    """The trainer's key-holder link on the worker (``core.gram_training.KeyHolderLink``): every question is an
    event for the actor call waiting on it; the answer, the client's reply, is checked here."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.answers: queue.Queue[bytes | None] = queue.Queue()

    def _ask(self, kind: str, question: Any) -> bytes:
        self.events.put((kind, question))
        answer = self.answers.get()
        if answer is None:
            raise Stopped
        return answer

    def __call__(self, masked: EncryptedMatrix) -> EncryptedMatrix:
        answer = self._ask("refresh", masked.to_bytes())
        return validation.reply_matrix(self.engine, answer, "the refreshed matrix", like=masked)

    def precondition(self, masked: EncryptedMatrix) -> EncryptedMatrix:
        """Refinement (``core.refine``): a fresh encryption of ``P`` times the masked row, checked here."""
        answer = self._ask("precondition", masked.to_bytes())
        return validation.reply_matrix(self.engine, answer, "the preconditioned refresh", like=masked)

    def solve_normal(self, system: Any, rhs: Any = None) -> EncryptedMatrix:
        answer = self._ask("solve", _system_question(system, rhs, None))
        return validation.reply_matrix(self.engine, answer, "the solved weights")

    def solve_refined(self, system: Any, rhs: Any, spec: Any) -> tuple[EncryptedMatrix, list[EncryptedMatrix]]:
        """Refinement: the warm start and ``Enc(P)``'s rows from the client's whole ``NormalSolution`` (its
        serialized bytes), parsed and checked here."""
        reply = training_pb.NormalSolution.FromString(self._ask("solve", _system_question(system, rhs, spec)))
        return refined_solution(self.engine, reply, system.features)


def _system_question(system: Any, rhs: Any, spec: Any) -> dict[str, Any]:
    return {"diagonals": system.diagonals.to_bytes(), "column": system.column.to_bytes(), "rows": system.rows,
            "features": system.features, "factor": system.factor, "form": system.form, "rhs": rhs, "spec": spec}


class TrainerHost:
    """One job's trainer on a worker, from its checkpoints (the statistics, then the last epoch's state) and,
    for a per-row trainer, the job's whole table (``data``: X, y, then each shuffled copy's X and y, loaded on
    this worker) or its ``shards`` elsewhere (a ``ray_jobs.ShardGroup``: this worker is the pool's driver)."""

    def __init__(self, engine: Engine, trainer_type: Any, config: Any, checkpoints: list[bytes],
                 data: tuple[EncryptedMatrix, ...] = (), shards: Any = None) -> None:
        state: dict[str, Any] = {}
        for blob in checkpoints:
            state |= codec.checkpoint_from_bytes(engine, blob)
        self.link = WorkerLink(engine)
        X, y = data[:2] if data else (None, None)
        shuffles = tuple(zip(data[2::2], data[3::2], strict=True))
        # Only what the trainer takes: one-pass trainers have no shuffles, nor a shard source.
        args = (shuffles,) if shuffles else ()
        kwargs = {"shards": shards} if shards is not None else {}
        if state:
            self.trainer = trainer_type.resume(engine, X, y, config, self.link, state, *args, **kwargs)
        else:
            self.trainer = trainer_type(engine, X, y, config, self.link, *args, **kwargs)
        self.constant = set(self._fixed())
        self._thread: threading.Thread | None = None

    def summary(self) -> dict[str, Any]:
        trainer = self.trainer
        return {"epoch": trainer.epoch, "done": trainer.done, "weight_scale": trainer.weight_scale,
                "metadata": trainer.metadata(),
                "fixed": {key: _portable(value) for key, value in self._fixed().items()}}

    def _fixed(self) -> dict[str, Any]:
        """A one-pass trainer's statistics (``fixed_state``); a per-row trainer has none."""
        fixed = getattr(self.trainer, "fixed_state", None)
        return fixed() if fixed is not None else {}

    def step(self, action: str, answer: bytes | None) -> tuple[str, Any]:
        """Start ``action`` ("epoch", "weights", or "refresh": the weights refreshed once more) with ``answer``
        None, or answer the running one's question; return its next question, or ``("done", result)``."""
        if answer is None:
            if self._thread is not None:
                raise RuntimeError("a trainer step began while the previous one still waits for the key holder")
            work = {"epoch": self._epoch, "weights": self._weights, "refresh": self._refresh}[action]
            self._thread = threading.Thread(target=self._run, args=(work,), daemon=True, name="trainer")
            self._thread.start()
        else:
            self.link.answers.put(answer)
        kind, value = self.link.events.get()
        if kind in ("done", "error"):
            assert self._thread is not None
            self._thread.join()
            self._thread = None
        if kind == "error":
            raise value
        return kind, value

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self.link.events.put(("done", work()))
        except Stopped:
            pass
        except BaseException as exc:  # reaches the server as raised (ExecutionError.get re-raises the cause)
            self.link.events.put(("error", exc))

    def _epoch(self) -> dict[str, Any]:
        result = self.trainer.run_epoch()
        # A fixed part that appeared in this epoch (refinement: Enc(P)'s rows after its first) goes back once.
        fixed = {key: _portable(value) for key, value in self._fixed().items() if key not in self.constant}
        self.constant |= set(fixed)
        changing = {key: _portable(value) for key, value in self.trainer.state().items() if key not in self.constant}
        return {"epoch": result.epoch, "counts": result.counts.to_dict(), "refreshes": result.refreshes,
                "loss": _portable(result.loss), "loss_scale": result.loss_scale, "state": changing,
                "fixed": fixed, "done": self.trainer.done}

    def _weights(self) -> bytes:
        return self.trainer.weights.to_bytes()

    def _refresh(self) -> bytes:
        return self.trainer.refresh(self.trainer.weights).to_bytes()

    def stop(self) -> None:
        if self._thread is not None:
            self.link.answers.put(None)


def _flat(value: Any) -> Any:
    return FlatMatrix(value) if isinstance(value, bytes) else value


def flat_state(state: dict[str, Any]) -> dict[str, Any]:
    """A state whose matrices came as bytes (``RayExecutor.gram_finish``) with each as a ``FlatMatrix``, as
    ``wire.codec.checkpoint_to_bytes`` takes it: a checkpoint written without parsing a ciphertext."""
    return {key: _flat(value) for key, value in state.items()}


@dataclass
class _System:
    """The normal system as the relay sends it: the statistics' matrices unparsed."""

    diagonals: FlatMatrix
    column: FlatMatrix
    rows: int
    features: int
    factor: float
    form: str


class RemoteTrainer:
    """The job runner's trainer interface over a ``TrainerHost`` on a worker (``call(method, *args)`` waits on
    it). ``relay`` is the job's line to the key holder (``StreamRefresh``): its ``refresh_reply`` and
    ``normal_reply`` carry the host's questions to the client and bring the replies back unparsed."""

    def __init__(self, call: Callable[..., Any], relay: Any, counts: OpCounts, *opening: Any) -> None:
        self.call, self.relay, self.counts = call, relay, counts
        summary = call("trainer_open", *opening)
        self.epoch, self.done = summary["epoch"], summary["done"]
        self.weight_scale, self._metadata = summary["weight_scale"], summary["metadata"]
        self._fixed = {key: _flat(value) for key, value in summary["fixed"].items()}
        self._changing: dict[str, Any] = {}

    def fixed_state(self) -> dict[str, Any]:
        return dict(self._fixed)

    def state(self) -> dict[str, Any]:
        return self._fixed | self._changing

    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def run_epoch(self) -> EpochResult:
        result = self._drive("epoch")
        self.epoch, self.done = result["epoch"], result["done"]
        self._changing = {key: _flat(value) for key, value in result["state"].items()}
        self._fixed |= {key: _flat(value) for key, value in result["fixed"].items()}
        counts = OpCounts(**result["counts"])
        self.counts.absorb(counts)  # the server's operation metrics see the job's work
        return EpochResult(result["epoch"], counts, result["refreshes"], 0.0, _flat(result["loss"]),
                           result["loss_scale"])

    @property
    def weights(self) -> FlatMatrix:
        return FlatMatrix(self._drive("weights"))

    def refresh(self, weights: Any) -> FlatMatrix:
        """The trainer's weights refreshed once more (the only matrix a job runner refreshes: ``weights``
        before it is stored), on the worker through the relay."""
        return FlatMatrix(self._drive("refresh"))

    def _drive(self, action: str) -> Any:
        kind, value = self.call("trainer_step", action, None)
        while kind != "done":
            if kind in ("refresh", "precondition"):
                answer = self.relay.refresh_reply(FlatMatrix(value), kind == "precondition")
            else:
                system = _System(FlatMatrix(value["diagonals"]), FlatMatrix(value["column"]), value["rows"],
                                 value["features"], value["factor"], value["form"])
                reply = self.relay.normal_reply(system, value["rhs"], value["spec"])
                # Refinement's answer is the whole NormalSolution (weights and Enc(P)'s rows), else its weights.
                answer = reply if value["spec"] is not None else reply.weights
            kind, value = self.call("trainer_step", action, answer.SerializeToString())
        return value
