"""Dispatch independent (model, dataset) jobs: in-process, through submitit's local executor, or to SLURM.

Why submitit: the original ran its 8 x 12 grid with a personal SLURM script and `--rank` arithmetic.  Here every job
is idempotent (each stage is cached by fingerprint in the run directory), so the same config can run sequentially on
a laptop, one process per job locally, or as a SLURM array, and a re-submission only computes what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from quirky.errors import QuirkyError
from quirky.pipeline.config import ExecutorConfig

T = TypeVar("T")


def run_jobs(
    fn: Callable[..., T],
    jobs: Sequence[tuple[Any, ...]],
    executor: ExecutorConfig,
    run_dir: Path,
) -> list[T]:
    """Run `fn(*job)` for every job and return the results in job order.

    A failing job raises after all submitted jobs have finished, naming the job and where its log is.
    """
    if executor.kind == "local":
        return [fn(*job) for job in jobs]

    import submitit

    folder = Path(executor.folder) if executor.folder else run_dir / "submitit"
    params = dict(executor.slurm)
    params.setdefault("timeout_min", 24 * 60)
    if executor.kind == "submitit-local":
        # One process per job; with `gpus_per_node = 1` submitit gives each job its own GPU.
        ex: Any = submitit.LocalExecutor(folder=folder)
    elif executor.kind == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params.setdefault("gpus_per_node", 1)
    else:  # validated in config, kept for type checkers
        raise QuirkyError(f"unknown executor kind {executor.kind!r}")
    try:
        ex.update_parameters(**params)
    except Exception as e:  # submitit names the bad parameter
        raise QuirkyError(f"[executor] parameters rejected by submitit: {e}") from None

    submitted = [ex.submit(fn, *job) for job in jobs]
    results: list[T] = []
    failures: list[str] = []
    for job, handle in zip(jobs, submitted, strict=True):
        try:
            results.append(handle.result())
        except Exception as e:
            failures.append(
                f"job ({', '.join(str(x) for x in job if not isinstance(x, dict))}) failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); log: {handle.paths.stderr}"
            )
    if failures:
        raise QuirkyError("some jobs failed:\n  " + "\n  ".join(failures))
    return results
