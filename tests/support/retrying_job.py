"""A job whose only step asks to be retried in ten minutes: a run of it sits in Dagster's wait before
the retry, which sleeps through interrupts."""

from dagster import OpExecutionContext, RetryRequested, in_process_executor, job, op

RETRY_IN_S = 600


@op
def retries_later(context: OpExecutionContext) -> None:
    if context.retry_number == 0:
        raise RetryRequested(max_retries=1, seconds_to_wait=RETRY_IN_S)


@job(executor_def=in_process_executor)  # as the pipeline's jobs
def retrying_job() -> None:
    retries_later()
