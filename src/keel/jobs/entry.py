"""A pipeline job's process: ``python -m keel.jobs.entry <job_id>``.

The worker starts this with the store's settings in ``KEEL_*`` variables. It loads
the job, runs its pipeline (``module:attr`` imported from the working directory)
with the job's parameters, and records on the job:

- ``run_id``: the pipeline's run, as soon as its first step is scheduled (so a
  preempted attempt's run is known too);
- ``model_name`` / ``model_version``: the model version the pipeline registered,
  from a ``models:/name/version`` output (the ``model`` key, as automation's retrain
  contract has it, or the one such output the pipeline returned).

It exits 0 when the pipeline finished, 1 with one line on stderr when it did not.
SIGTERM (a cancel or preemption) ends the pipeline run as KILLED; a step that
finished before is a cache hit when the job runs again, so the rerun resumes.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, KeelError

if TYPE_CHECKING:
    from types import FrameType

    from keel.client import Client
    from keel.jobs.entities import Job
    from keel.pipelines.runner import StepEvent

__all__ = ["main", "registered_model", "run_job"]

log = logging.getLogger(__name__)

#: The output automation's retrain contract reads the registered model from.
MODEL_OUTPUT = "model"


def registered_model(outputs: Any) -> tuple[str, int] | None:
    """``(name, version)`` of a ``models:/name/version`` output, if the pipeline returned one.

    The ``model`` key wins; otherwise the only ``models:/name/version`` value among the
    outputs (none when there are several: which one is the model would be a guess).
    """
    from keel.uris import ModelURI, parse_model_uri

    if not isinstance(outputs, dict):
        return None

    def parsed(value: Any) -> tuple[str, int] | None:
        if not isinstance(value, str) or not value.startswith("models:/"):
            return None
        try:
            uri = parse_model_uri(value)
        except InvalidInput:
            return None
        if isinstance(uri, ModelURI) and uri.version is not None:
            return uri.name, uri.version
        return None

    if MODEL_OUTPUT in outputs:
        return parsed(outputs[MODEL_OUTPUT])
    found = [p for p in (parsed(v) for v in outputs.values()) if p is not None]
    return found[0] if len(found) == 1 else None


def run_job(client: Client, job: Job) -> Job:
    """Run ``job``'s pipeline and record its run and registered model on the job.

    Raises:
        InvalidInput: the job is not a pipeline job.
        StepFailed: a step failed (the run id is recorded first).
    """
    from keel.pipelines import StepFailed, run_pipeline

    if job.kind != "pipeline":
        raise InvalidInput(f"job {job.id} is a {job.kind} job; only pipeline jobs run here")
    jobs = client.jobs
    seen: dict[str, str] = {}

    def on_event(event: StepEvent) -> None:
        if seen:
            return
        # A step's run is nested in the pipeline's: its parent is the run to record.
        seen["run_id"] = event.run_id
        try:
            parent = client.get_run_info(event.run_id).parent_id or event.run_id
            seen["run_id"] = parent
            jobs.record(job, run_id=parent)
            client.set_tags(parent, {"keel.job.id": str(job.id), "keel.job.queue": job.queue})
        except KeelError as exc:  # bookkeeping: the pipeline runs on, its end records the run
            log.warning("keel: could not record the run of job %s yet: %s", job.id, exc)

    try:
        run = run_pipeline(job.target, params=job.params, on_event=on_event)
    except StepFailed as exc:
        if exc.run.run_id != seen.get("run_id"):
            jobs.record(job, run_id=exc.run.run_id)
        raise
    facts: dict[str, Any] = {"run_id": run.run_id}
    model = registered_model(run.outputs)
    if model is not None:
        facts.update(model_name=model[0], model_version=model[1])
    return jobs.record(job, **facts)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C: the pipeline's run ends KILLED and its buffered metrics are written.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job named by ``argv[0]``; the process's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        print(f"usage: python -m keel.jobs.entry JOB_ID (got {' '.join(args)!r})", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    # Step progress (cached, running, finished) goes to the job's log.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("keel").addHandler(handler)
    logging.getLogger("keel").setLevel(logging.INFO)
    import keel

    try:
        client = keel.Client()
        run_job(client, client.jobs.get(int(args[0])))
    except KeyboardInterrupt:
        print(f"keel: job {args[0]} stopped by a signal", file=sys.stderr)
        return 128 + int(signal.SIGTERM)
    except KeelError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"keel: job {args[0]} failed: {first}", file=sys.stderr)
        return 1
    except Exception as exc:  # the pipeline's own code raised: one line, as every keel command
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"keel: job {args[0]} failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
