"""Where the attention probe runs: one click read on the GUI thread, the engine job (`engine.attention_jobs`)
run off it, the plain result turned into what the overlay draws."""

from __future__ import annotations

from napari_muvit.widgets.attention.overlay import ProbeView
from napari_muvit.widgets.engine_process import ProcessJob
from napari_muvit.widgets.workers import EngineJob

PROBE_TARGET = "napari_muvit.engine.attention_jobs:probe_job"
PROBE_PROCESS = "probe"  # its own worker process: a long prediction in the engine process never delays a click


def choice(value) -> str | int:
    """Combo text -> the engine's argument: 'last'/'rollout'/'mean' stay, digits become an index."""
    return int(value) if str(value).isdigit() else str(value)


def probe_request(layer, source, model: str, levels: str, point_yx, layer_choice, head, query_level) -> dict:
    """The job's request for one click (plain values only). A file-backed image is known by its path; an
    in-memory one by its layer's identity (it stays in this process)."""
    identity = source if isinstance(source, str) else f"layer-{id(layer)}"
    return {"key": (identity, model, levels), "source": source, "model": model, "levels": levels,
            "point_yx": tuple(float(v) for v in point_yx), "layer": choice(layer_choice), "head": choice(head),
            "query_level": int(query_level)}


def probe_job_for(request: dict, use_process: bool = True) -> EngineJob:
    """The job for ``request``: in the probe's worker process when the image is a file, else a thread."""
    if use_process and isinstance(request["source"], str):
        return ProcessJob(PROBE_TARGET, args=(request,), description="attention probe", process=PROBE_PROCESS)

    def run(progress, cancel):
        from napari_muvit.engine.attention_jobs import probe_job

        return probe_job(request)

    return EngineJob(run, description="attention probe")


def probe_view(result: dict) -> ProbeView:
    """The overlay's view of a probe result."""
    return ProbeView(tuple(result["levels"]), list(result["maps"]), list(result["bboxes"]),
                     result["query_world_yx"], int(result["query_level"]), int(result["patch_size"]))
