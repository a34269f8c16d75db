"""TrainingService: the bidirectional training stream plus job bookkeeping."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from server.access import Access
from server.errors import ServiceError, invalid, rpc
from server.jobs import End, JobRunner, Link
from server.pool_training import training_source
from server.storage import Store
from wire.proto_gen.ciphergrad.v1 import training_service_pb2 as pb
from wire.proto_gen.ciphergrad.v1 import training_service_pb2_grpc as pb_grpc


def _read_replies(requests: Iterator[pb.TrainRequest], link: Link) -> None:
    """Feed refresh replies to the job; the stream's end (or failure) detaches the client."""
    try:
        for request in requests:
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
    def __init__(self, store: Store, access: Access, runner: JobRunner) -> None:
        self.store, self.access, self.runner = store, access, runner

    @rpc
    def Train(
        self, request_iterator: Iterator[pb.TrainRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.TrainResponse]:
        session = self.access.session(context)
        first = next(request_iterator, None)
        kind = first.WhichOneof("kind") if first is not None else None
        if kind == "start":
            dataset = training_source(self.store, self.access, first.start, session)  # a dataset or a pool
            job = self.runner.create(session, dataset, first.start)
        elif kind == "attach":
            job = self.access.job(first.attach.job_id, session)
            self.runner.prepare_attach(job)
        else:
            raise invalid("the first TrainRequest must be `start` (a new job) or `attach` (resume a job)")
        link = Link()
        context.add_callback(link.detach)
        threading.Thread(target=_read_replies, args=(request_iterator, link), daemon=True).start()
        self.runner.launch(job.id, link)
        while True:
            item = link.events.get()
            if isinstance(item, End):
                if item.code not in (None, grpc.StatusCode.OK):
                    raise ServiceError(item.code, item.message)
                return
            yield item

    @rpc
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.GetJobResponse:
        job = self.access.job(request.job_id, self.access.session(context))
        return pb.GetJobResponse(job=job.to_proto())

    @rpc
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        session = self.access.session(context)
        return pb.ListJobsResponse(jobs=[job.to_proto() for job in self.store.jobs(session.id)])

    @rpc
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        job = self.access.job(request.job_id, self.access.session(context))
        return pb.CancelJobResponse(job=self.runner.cancel(job.id).to_proto())
