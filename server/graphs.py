"""Attribution graphs in the viewer: the graphs saved beside a replacement model, computing new ones,
and interventions on their features.

- Reading: `<dictionary>/graphs/<slug>.json` through `core.attribution`'s reader (node ids made unique,
  graphs from circuit-tracer and Neuronpedia included). Each feature node gets `feature_index`, its
  index in the replacement model's analyses and annotations (`feature_store_index`), and its label
  as it is now (a label saved after the graph shows at once).
- Computing: a graph takes seconds to minutes, so a request only starts a job (`GraphJobs.submit`,
  HTTP 202) and the viewer polls its progress (rows done of all). A job takes one of the
  GPT2DICT_INFERENCE_CONCURRENCY slots when it is submitted (none free: HTTP 503 at once, as for
  custom text) and keeps it until it ends; it loads the model and replacement model in its own thread
  (the model cache's, shared with custom text and steering), holds the model's lock only for the
  prompt's one forward, and saves the graph when done. Finished jobs are kept for KEEP_S seconds.
- Interventions: a few forwards, computed in a slot like steering (the endpoint's caller does that).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from core.attribution import attribute, list_graphs, load_graph_file, save_graph
from core.attribution.graph_file import (FEATURE_TYPE, GRAPH_SUFFIX, feature_store_index, graph_path, slugify)
from core.annotations import Annotations
from core.errors import USER_ERRORS
from core.layout import graphs_folder

from .inference import InferenceBusy, ModelCache, ModelLoadFailed
from .results import DictionaryInfo, NotFound

log = logging.getLogger(__name__)

KEEP_S = 3600.0
"""How long a finished job's status stays readable."""
BUSY_RETRY_AFTER_S = 5


def saved_graph_count(folder: Path) -> int:
    graphs = graphs_folder(folder)
    return sum(1 for _ in graphs.glob(f"*{GRAPH_SUFFIX}")) if graphs.is_dir() else 0


def graph_summaries(info: DictionaryInfo) -> list[dict[str, Any]]:
    return list_graphs(info.folder)


def feature_key(node: dict) -> tuple[int, int]:
    """(layer, feature) of a feature node (`{layer}_{feature}_{pos}`)."""
    return int(float(node["layer"])), int(str(node["node_id"]).split("_")[1])


def read_graph(info: DictionaryInfo, slug: str) -> dict[str, Any]:
    """The graph `slug` of a replacement model, its feature nodes with their index in the dictionary's
    analyses and their current labels (NotFound when there is no such graph)."""
    path = graph_path(info.folder, slug)
    if not path.is_file():
        raise NotFound(f"Dictionary {info.name!r} has no graph named {slug!r} (expected {path.name} in its graphs "
                       "folder).")
    data = load_graph_file(path)
    layers, d_sae = info.config.get("layers"), info.config.get("d_sae")
    features = [n for n in data["nodes"] if n["feature_type"] == FEATURE_TYPE]
    for node in features:
        layer, feature = feature_key(node)
        node["feature_index"] = (feature_store_index(layers, d_sae, layer, feature)
                                 if layers and layer in layers and isinstance(d_sae, int) else None)
    indices = {n["feature_index"] for n in features if n["feature_index"] is not None}
    labels = Annotations.of_dictionary(info.folder).many(indices)
    for node in features:
        note = labels.get(node["feature_index"])
        if note is not None and note.label:
            node["clerp"] = note.label
    data["replacement"] = {"kind": info.kind, "layers": layers, "d_sae": d_sae}
    return data


def interventions_of(data: dict[str, Any], requested: list[tuple[str, float]]) -> list[tuple[int, int, int, float]]:
    """(layer, position, feature, scale) of each requested feature node of a graph; NotFound for a node
    the graph does not have or that is not a feature."""
    nodes = {n["node_id"]: n for n in data["nodes"]}
    out = []
    for node_id, scale in requested:
        node = nodes.get(node_id)
        if node is None or node["feature_type"] != FEATURE_TYPE:
            raise NotFound(f"{node_id!r} is not a feature node of this graph; interventions act on feature nodes.")
        layer, feature = feature_key(node)
        out.append((layer, node["ctx_idx"], feature, scale))
    return out


@dataclass
class GraphJob:
    id: str
    dictionary: str
    slug: str
    prompt: str
    status: str = "loading"
    """loading (the model), running, saving, done, failed."""
    done: int = 0
    """Rows of the graph computed (each a target node's edges)."""
    total: int = 0
    error: Optional[str] = None
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {"id": self.id, "dictionary": self.dictionary, "slug": self.slug, "prompt": self.prompt,
                "status": self.status, "done": self.done, "total": self.total, "error": self.error,
                "seconds": round(end - self.started, 2)}


class GraphJobs:
    """Graph computations in their own threads, each holding an inference slot (module doc)."""

    def __init__(self, models: ModelCache, slots: threading.BoundedSemaphore) -> None:
        self.models, self.slots = models, slots
        self._lock = threading.Lock()
        self._jobs: dict[str, GraphJob] = {}

    def submit(self, info: DictionaryInfo, prompt: str, *, slug: Optional[str], settings: dict[str, Any],
               node_threshold: float, edge_threshold: float) -> GraphJob:
        """Start computing the graph of `prompt`; InferenceBusy when no inference slot is free."""
        if not self.slots.acquire(blocking=False):
            raise InferenceBusy("Every inference slot is busy (GPT2DICT_INFERENCE_CONCURRENCY); start the graph again "
                                "in a few seconds.", BUSY_RETRY_AFTER_S)
        try:
            job = GraphJob(uuid.uuid4().hex, info.name, self._free_slug(info, slug or slugify(prompt)), prompt)
            with self._lock:
                self._forget_old()
                self._jobs[job.id] = job
            threading.Thread(target=self._run, args=(job, info, settings, node_threshold, edge_threshold),
                             name=f"graph-{job.id[:8]}", daemon=True).start()
        except BaseException:
            self.slots.release()
            raise
        return job

    def get(self, job_id: str) -> GraphJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"No graph job {job_id!r} (finished jobs are forgotten after {KEEP_S:g} s).")
        return job

    def _free_slug(self, info: DictionaryInfo, slug: str) -> str:
        """`slug`, or `slug-2`, `slug-3`, ... when a graph or a running job has it already."""
        with self._lock:
            taken = {j.slug for j in self._jobs.values() if j.dictionary == info.name and j.status != "failed"}
        candidate, n = slug, 1
        while candidate in taken or graph_path(info.folder, candidate).exists():
            n += 1
            candidate = f"{slug}-{n}"
        return candidate

    def _forget_old(self) -> None:
        now = time.monotonic()
        for job_id in [i for i, j in self._jobs.items() if j.finished is not None and now - j.finished > KEEP_S]:
            del self._jobs[job_id]

    def _run(self, job: GraphJob, info: DictionaryInfo, settings: dict[str, Any], node_threshold: float,
             edge_threshold: float) -> None:
        try:
            pair = self.models.get(info)
            job.status = "running"

            def progress(done: int, total: int) -> None:
                job.done, job.total = done, total

            graph = attribute(job.prompt, pair.sae, pair.model, progress=progress, model_lock=pair.lock, **settings)
            job.status = "saving"
            save_graph(graph, info.folder, slug=job.slug, node_threshold=node_threshold, edge_threshold=edge_threshold)
            job.status = "done"
        except (*USER_ERRORS, InferenceBusy, ModelLoadFailed) as e:
            job.status, job.error = "failed", str(e)
        except Exception as e:  # noqa: BLE001  (a bug: logged with its traceback, the viewer told where)
            log.exception("Graph job %s of %s failed", job.id, info.name)
            job.status, job.error = "failed", f"Computing the graph failed ({type(e).__name__}); the server log has the details."
        finally:
            job.finished = time.monotonic()
            self.slots.release()


__all__ = ["GraphJob", "GraphJobs", "graph_summaries", "interventions_of", "read_graph", "saved_graph_count"]
