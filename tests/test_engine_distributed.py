"""A 2-process local dask cluster writes the same store as the in-process run."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.testing import random_slide, tiny_segmenter

pytest.importorskip("distributed")


def test_two_worker_cluster_matches_single_process(tmp_path):
    from napari_muvit.model import save_model

    save_model(tiny_segmenter(), tmp_path / "model")
    tifffile.imwrite(tmp_path / "slide.tif", (random_slide((200, 176), seed=11) * 255).astype(np.uint8))
    base = Recipe(source=str(tmp_path / "slide.tif"), model=str(tmp_path / "model"), overlap=8, batch_size=4,
                  region=(8, 200, 0, 170))
    single = predict(base.replace(out=str(tmp_path / "single.zarr")))
    seen = []
    multi = predict(base.replace(out=str(tmp_path / "multi.zarr"), workers=2), progress=lambda d, t: seen.append(d))
    assert single.complete and multi.complete and multi.tiles_done == single.tiles_done == 8 * 8
    assert seen[-1] == 64
    a, b = zarr.open_group(str(single.path), mode="r"), zarr.open_group(str(multi.path), mode="r")
    for key in ("0", "labels/prediction/0"):
        np.testing.assert_array_equal(a[key][:], b[key][:])
    assert (single.path / "tiles.csv").read_text() == (multi.path / "tiles.csv").read_text()
    assert b.attrs["napari_muvit"]["complete"] is True


def test_failed_tasks_are_retried_and_a_killed_worker_loses_no_tile(tmp_path, monkeypatch):
    """One batch task and one blending task fail once, and a worker process is SIGKILLed mid-run."""
    import os
    import signal

    from dask.distributed import Client, LocalCluster

    from napari_muvit.model import save_model

    save_model(tiny_segmenter(), tmp_path / "model")
    tifffile.imwrite(tmp_path / "slide.tif", (random_slide((160, 160), seed=3) * 255).astype(np.uint8))
    base = Recipe(source=str(tmp_path / "slide.tif"), model=str(tmp_path / "model"), overlap=8, batch_size=4)
    single = predict(base.replace(out=str(tmp_path / "single.zarr")))
    tokens = tmp_path / "failures"
    tokens.mkdir()
    for name in ("batch-1", "finalise-1"):
        (tokens / name).touch()
    monkeypatch.setenv("NAPARI_MUVIT_INJECT_FAILURES", str(tokens))  # inherited by the worker processes
    seen, killed = [], []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:  # closed before predict opens its own client: one client at a time
            pids = sorted(client.run(os.getpid).values())

        def progress(done, total):
            seen.append(done)
            if len(seen) == 3 and not killed:  # after the first results: a worker dies mid-run
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        multi = predict(base.replace(out=str(tmp_path / "multi.zarr"), scheduler=cluster.scheduler_address),
                        progress=progress)
    assert killed and not list(tokens.iterdir())  # both injected failures happened (and were retried)
    assert multi.complete and multi.tiles_done == single.tiles_done == 7 * 7
    assert seen[-1] == 49 and all(b >= a for a, b in zip(seen, seen[1:]))  # finished tiles never go back
    a, b = zarr.open_group(str(single.path), mode="r"), zarr.open_group(str(multi.path), mode="r")
    for key in ("0", "labels/prediction/0"):
        np.testing.assert_array_equal(a[key][:], b[key][:])
    assert (single.path / "tiles.csv").read_text() == (multi.path / "tiles.csv").read_text()
