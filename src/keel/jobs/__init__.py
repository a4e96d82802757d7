"""Jobs and GPU scheduling: queues with quotas, priorities, preemption, measured use and cost.

``keel jobs submit`` queues a pipeline (``module:attr`` with params) or a command,
with the resources it needs (GPUs of a type, CPUs, memory), a queue and a
priority. A queue has quotas per resource, may borrow its cohort's idle quota,
and has a GPU-hour budget per day. The scheduler (:class:`Scheduler`) admits a
job only when all it asks for fits, by priority then arrival, and may preempt
lower-priority borrowers; ``keel jobs why`` says what a job waits for. Workers
(``keel jobs worker``) run admitted jobs on their inventory, locally or on Ray,
sample what they use, and cost them from a price table.

Example:
    >>> jobs = keel.Client().jobs
    >>> jobs.apply_queue({"name": "team-a", "quotas": {"gpu:a100": 2, "cpus": 16}})
    >>> job = jobs.submit("pipelines.train:train", queue="team-a", gpus=1, priority="high")
    >>> keel.jobs.Scheduler().why(job.id).summary
    'job 1 is queued in team-a, at the head'
"""

from keel.jobs.costing import job_cost, record_cost, version_cost
from keel.jobs.entities import STATES, Job, JobEvent, Pool, Queue
from keel.jobs.prices import JobPrice, JobPrices, JobPriceTable
from keel.jobs.report import Report, jobs_report
from keel.jobs.resources import PRIORITIES, Inventory, Request
from keel.jobs.scheduler import Decision, Explanation, LeaseLost, Scheduler
from keel.jobs.store import JobStore, Step, jobs_for, load_queue
from keel.jobs.worker import Worker, job_log

__all__ = [
    "PRIORITIES",
    "STATES",
    "Decision",
    "Explanation",
    "Inventory",
    "Job",
    "JobEvent",
    "JobPrice",
    "JobPriceTable",
    "JobPrices",
    "JobStore",
    "LeaseLost",
    "Pool",
    "Queue",
    "Report",
    "Request",
    "Scheduler",
    "Step",
    "Worker",
    "job_cost",
    "job_log",
    "jobs_for",
    "jobs_report",
    "load_queue",
    "record_cost",
    "version_cost",
]
