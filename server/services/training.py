"""TrainingService: the bidirectional training stream plus job bookkeeping (async shells, sync bodies:
``server.rpc.work``).

A Train stream holds no thread: its events come from the job (``server.jobs.links.Link``) through an
``asyncio.Queue``, and a reader task on the loop hands the client's replies to the job. After its first
message a Train stream may stay silent for as long as the server trains (--stream-idle-timeout applies to the
first message only); the key holder's answers are bounded by --refresh-timeout instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from ciphergrad.server.jobs.links import End, Link
from ciphergrad.server.jobs.pool_view import training_source
from ciphergrad.server.jobs.runner import JobRunner
from ciphergrad.server.rpc.access import Access, Metadata
from ciphergrad.server.rpc.errors import ServiceError, invalid, rpc
from ciphergrad.server.rpc.work import Inbound, Work
from ciphergrad.server.store.records import JobRecord, SessionRecord
from ciphergrad.server.store.store import Store
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2 as pb
from ciphergrad.wire.proto_gen.ciphergrad.v1 import training_service_pb2_grpc as pb_grpc


async def _read_replies(requests: Inbound, link: Link) -> None:
    """Feed refresh replies to the job; the stream's end (or failure) detaches the client."""
    try:
        async for request in requests:
            kind = request.WhichOneof("kind")
            if kind in ("refresh_reply", "normal_solution"):
                link.replies.put(getattr(request, kind))
            else:
                link.replies.put(
                    invalid("after the first message a Train stream carries only refresh_reply or normal_solution")
                )
    except Exception:  # grpc raises on cancellation/disconnect: both mean the client is gone
        pass
    finally:
        link.detach()


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    def __init__(self, store: Store, access: Access, runner: JobRunner, work: Work) -> None:
        self.store, self.access, self.runner, self.work = store, access, runner, work
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    @rpc
    async def Train(
        self, request_iterator: AsyncIterator[pb.TrainRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TrainResponse]:
        async with self.work.open_stream(
            request_iterator, context, "Train", self.access.session, kinds=("start", "attach"),
            refusal="the first TrainRequest must be `start` (a new job) or `attach` (resume a job)",
        ) as (session, requests, first):
            link = Link(asyncio.get_running_loop())
            admission = asyncio.ensure_future(self.work.io(self.admit, session, first, link))
            try:
                job = await asyncio.shield(admission)
            except asyncio.CancelledError:  # the client left while its job was being admitted
                link.detach()
                admission.add_done_callback(lambda done: self._start(done.result().id, link) if not done.exception()
                                            else None)  # its run sees the link detached: PAUSED, let go
                raise
            requests.idle_timeout = None  # from now on the client speaks only when asked to
            reader = asyncio.create_task(_read_replies(requests, link))
            self._start(job.id, link)
            try:
                while True:
                    item = await link.next_event()
                    if isinstance(item, End):
                        if item.code not in (None, grpc.StatusCode.OK):
                            raise ServiceError(item.code, item.message)
                        return
                    yield item
            finally:
                link.detach()  # the client went away (or the job ended): a running job pauses at its checkpoint
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    def _start(self, job_id: str, link: Link) -> None:
        starter = asyncio.create_task(self.runner.run(job_id, link))
        self._tasks.add(starter)
        starter.add_done_callback(self._tasks.discard)

    def admit(self, session: SessionRecord, first: pb.TrainRequest, link: Link) -> JobRecord:
        """The job the first message (``start`` or ``attach``) starts or resumes, attached to ``link``."""
        if first.HasField("start"):
            dataset = training_source(self.store, self.access, first.start, session)  # a dataset or a pool
            return self.runner.admit(session.id, link, lambda: self.runner.create(session, dataset, first.start))
        job = self.access.job(first.attach.job_id, session)
        self.runner.prepare_attach(job)
        return self.runner.admit(session.id, link, lambda: job)

    @rpc
    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        return await self.work.io(self.get_job, request, context.invocation_metadata())

    def get_job(self, request: pb.GetJobRequest, metadata: Metadata) -> pb.GetJobResponse:
        job = self.access.job(request.job_id, self.access.session(metadata))
        return pb.GetJobResponse(job=job.to_proto())

    @rpc
    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        return await self.work.io(self.list_jobs, context.invocation_metadata())

    def list_jobs(self, metadata: Metadata) -> pb.ListJobsResponse:
        session = self.access.session(metadata)
        return pb.ListJobsResponse(jobs=[job.to_proto() for job in self.store.jobs(session.id)])

    @rpc
    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> pb.CancelJobResponse:
        return await self.work.io(self.cancel_job, request, context.invocation_metadata())

    def cancel_job(self, request: pb.CancelJobRequest, metadata: Metadata) -> pb.CancelJobResponse:
        job = self.access.job(request.job_id, self.access.session(metadata))
        return pb.CancelJobResponse(job=self.runner.cancel(job.id).to_proto())
