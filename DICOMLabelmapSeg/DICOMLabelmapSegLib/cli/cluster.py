"""Run cases on a ``dask.distributed`` cluster (``--dask-scheduler tcp://HOST:PORT``).

Every case is one task (:func:`~.batch.run_case`, which never raises); cases that read another
case's output wait for it. Inputs and outputs must be paths every worker can reach (a shared
file system). Needs the ``dask`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import LabelmapSegError


def run_on_dask(cases: Sequence[Any], needs: list[set[int]], scheduler: str, reporter: Any, debug: bool) -> list[Any]:
    """Results of ``cases`` (input order), computed by the workers of ``scheduler``."""
    from distributed import Client, as_completed

    from .batch import CaseResult, Interrupted, _blocked, run_case

    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as error:
        raise LabelmapSegError(f"Cannot connect to the Dask scheduler {scheduler}: {error}") from None
    results: dict[int, CaseResult] = {}
    try:
        waiting = list(range(len(cases)))
        while waiting:
            ready = [i for i in waiting if needs[i] <= set(results)] or waiting[:1]
            for index in ready:
                waiting.remove(index)
            futures = {}
            for index in ready:
                blocked = _blocked(cases, index, needs, results)
                if blocked:
                    results[index] = blocked
                    reporter.case_done(len(results), len(cases), blocked)
                else:
                    futures[client.submit(run_case, cases[index], debug, pure=False, key=f"case-{index}")] = index
            for future in as_completed(list(futures)):
                index = futures[future]
                results[index] = future.result()
                reporter.case_done(len(results), len(cases), results[index])
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise Interrupted(len(results), len(cases), len(cases) - len(results)) from None
    finally:
        client.close()
    return [results[index] for index in range(len(cases))]
