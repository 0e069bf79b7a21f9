"""fastretrain on a Dask cluster: a big data set learned in shards, one exact head.

``learn(model, source, out, shards=k)`` runs ``Retrainer.learn(source, shard=(i, k))`` for each
shard i on the cluster's workers (every worker reads the source and the model from a path it
can see: a shared or copied folder), brings the shard statistics back (``Statistics`` pickle as
their exact bytes), adds them up in shard order with ``Statistics.merge`` (a Dask reduction:
within each partition, then across partitions, in order), solves the head (lambda by GCV) and
saves the state to ``out``. The sum is exact: the result equals a single process's ``learn`` on
the whole source up to float rounding (tests: within 1e-9 relative).

With ``state_dir``, each shard keeps its own state file there (``shard-i-of-k.frs``): a shard
that is learned again resumes after the records it already holds (new records appended to the
source are picked up), and ``fastretrain merge`` of the shard states gives the same statistics.

    from dask.distributed import Client, LocalCluster
    import fastretrain_dask
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        report = fastretrain_dask.learn("models/mobilenetv2.onnx",
                                        "data/fashion-mnist/train-images-idx3-ubyte.gz",
                                        "fashion.frs", shards=4)
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.bag as db

import fastretrain


def learn_shard(index: int, count: int, model: str, source: str, *, state_dir=None,
                threads: int = 1, limit=None) -> fastretrain.Statistics:
    """Learns shard ``index`` of ``count`` of ``source`` on this worker; returns its statistics
    (those of the whole shard, resumed or not)."""
    state = None
    if state_dir is not None:
        os.makedirs(state_dir, exist_ok=True)
        state = str(Path(state_dir) / f"shard-{index}-of-{count}.frs")
    retrainer = fastretrain.Retrainer(model=model, state=state, threads=threads)
    # λ fixed: the head of one shard is never used, only its statistics (no GCV spent here).
    retrainer.learn(source, shard=(index, count), limit=limit, lam=1.0)
    if state is not None:
        retrainer.save(state)
    return retrainer.to_statistics()


def _merge_in_order(parts) -> fastretrain.Statistics | None:
    total = None
    for part in parts:
        if part is None:
            continue
        if total is None:
            total = fastretrain.Statistics(part.dim)
        total.merge(part)
    return total


def statistics(model: str, source: str, shards: int, *, state_dir=None, threads: int = 1,
               limit=None, scheduler=None) -> fastretrain.Statistics:
    """The statistics of the whole ``source``, learned in ``shards`` shards on the current Dask
    scheduler (a ``distributed.Client`` if one is active) and added up in shard order."""
    model, source = str(Path(model).resolve()), str(Path(source).resolve())
    if state_dir is not None:
        state_dir = str(Path(state_dir).resolve())
    bag = db.from_sequence(range(shards), npartitions=shards)
    parts = bag.map(learn_shard, shards, model, source, state_dir=state_dir, threads=threads,
                    limit=limit)
    total = parts.reduction(_merge_in_order, _merge_in_order)
    return total.compute(scheduler=scheduler)


def learn(model: str, source: str, out: str, *, shards: int, state_dir=None, threads: int = 1,
          limit=None, lam=None, scheduler=None) -> dict:
    """Learns ``source`` on the cluster (see the module docs) and saves the state with its head
    to ``out``. Returns the fit report."""
    total = statistics(model, source, shards, state_dir=state_dir, threads=threads, limit=limit,
                       scheduler=scheduler)
    retrainer = fastretrain.Retrainer(model=str(model), threads=threads)
    report = retrainer.merge_statistics(total, lam=lam)
    retrainer.save(str(out))
    return report
