"""A Dask LocalCluster (two worker processes, loopback only) learns the shipped training subset in
shards; the result must equal one process's learn, and shards must resume and merge."""

from pathlib import Path

import numpy as np
from dask.distributed import Client, LocalCluster

import fastretrain
import fastretrain_dask

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "mobilenetv2.onnx"
TRAIN = ROOT / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz"
LIMIT = 600


def columns(stats, labels):
    cross = stats.cross()
    return cross[:, [stats.labels.index(label) for label in labels]]


def test_cluster_learn_equals_one_process_and_shards_resume(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        report = fastretrain_dask.learn(MODEL, TRAIN, tmp_path / "cluster.frs", shards=3,
                                        state_dir=tmp_path / "shards", limit=LIMIT)
        # Learned again: every shard resumes after what its state holds (nothing new), so
        # the sum is the same, bit for bit.
        again = fastretrain_dask.statistics(MODEL, TRAIN, 3, state_dir=tmp_path / "shards",
                                            limit=LIMIT)
    assert report["lambda"] > 0
    cluster_state = fastretrain.Retrainer(state=str(tmp_path / "cluster.frs"), model=str(MODEL))
    total = cluster_state.to_statistics()

    single = fastretrain.Retrainer(model=str(MODEL), threads=1)
    single.learn(str(TRAIN), limit=LIMIT)
    one = single.to_statistics()

    assert total.samples == one.samples == LIMIT
    assert sorted(total.labels) == sorted(one.labels)
    assert dict(zip(total.labels, total.class_counts)) == dict(zip(one.labels, one.class_counts))
    scale = np.abs(one.gram()).max()
    assert np.abs(total.gram() - one.gram()).max() <= 1e-9 * scale
    assert np.abs(columns(total, one.labels) - one.cross()).max() <= 1e-9 * scale

    assert np.array_equal(again.gram(), total.gram())
    assert np.array_equal(columns(again, total.labels), total.cross())

    # The shard states merge (`fastretrain merge`) into the same statistics.
    shards = [tmp_path / "shards" / f"shard-{i}-of-3.frs" for i in range(3)]
    merged = fastretrain.Retrainer(model=str(MODEL), state=str(tmp_path / "merged.frs"))
    for shard in shards:
        merged.merge(str(shard))
    m = merged.to_statistics()
    assert np.array_equal(m.gram(), total.gram())
    assert np.array_equal(columns(m, total.labels), total.cross())


def test_a_shard_resumes_after_what_it_holds_and_overlaps_are_refused(tmp_path):
    state = tmp_path / "s.frs"
    r = fastretrain.Retrainer(model=str(MODEL), state=str(state), threads=1)
    first = r.learn(str(TRAIN), shard=(1, 4), limit=200)
    assert first["samples"] == 50
    again = r.learn(str(TRAIN), shard=(1, 4), limit=200)
    assert again["samples"] == 0 and again["resumed_after"] == 50
    # The whole source, or shards of another count, would count records twice.
    for bad in ({}, {"shard": (0, 2)}):
        try:
            r.learn(str(TRAIN), limit=200, **bad)
        except ValueError as e:  # a bad argument, as the library reports it
            assert "overlaps" in str(e)
        else:
            raise AssertionError(f"learning {bad or 'the whole source'} was not refused")
