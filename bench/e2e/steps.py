"""Where a trial's micro-batch runs spent their time, read from the stopped stack's Dagster storage.

    .venv/bin/python -m bench.e2e.steps <dagster home>

One line per micro-batch run: its range, its length from start to end, and each step's seconds
(`raw_messages`, `telemetry`, `hourly_rollups`, and the checks, which Dagster runs as steps of their own).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

#: Dagster's step events that open and close a step.
_STARTS = {"STEP_START"}
_ENDS = {"STEP_SUCCESS", "STEP_FAILURE"}


@dataclass(frozen=True)
class RunSteps:
    run_id: str
    label: str  # the run's range, as its tags give it
    seconds: float  # start to end of the run
    steps: dict[str, float] = field(default_factory=dict)  # step key -> seconds


def run_steps(home: Path, job: str = "micro_batch_job") -> list[RunSteps]:
    """The finished runs of `job` in the Dagster home `home`, oldest first."""
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

    finished = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    result = []
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(RunsFilter(job_name=job, statuses=finished), ascending=True)
        for record in records:
            if not (record.start_time and record.end_time):
                continue
            run = record.dagster_run
            opened: dict[str, float] = {}
            steps: dict[str, float] = {}
            for entry in instance.all_logs(run.run_id, of_type=kinds):
                if not entry.step_key or entry.dagster_event is None:
                    continue
                if entry.dagster_event.event_type_value in _STARTS:
                    opened[entry.step_key] = entry.timestamp
                elif entry.dagster_event.event_type_value in _ENDS and entry.step_key in opened:
                    steps[entry.step_key] = entry.timestamp - opened[entry.step_key]
            label = run.tags.get("iot/window") or run.tags.get("dagster/partition", "")
            span = round(record.end_time - record.start_time, 1)
            result.append(RunSteps(run.run_id, label, span, steps))
    return result


def describe(runs: list[RunSteps]) -> str:
    lines = []
    for run in runs:
        parts = ", ".join(f"{key} {seconds:.1f}" for key, seconds in sorted(run.steps.items()))
        lines.append(f"{run.label:<32} {run.seconds:>6.1f} s: {parts}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    print(describe(run_steps(parser.parse_args().home)))


if __name__ == "__main__":
    main()
