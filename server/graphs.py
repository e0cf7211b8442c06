"""Attribution graphs in the viewer: the graphs saved beside a replacement model, computing new ones,
and interventions on their features.

- Reading: `<dictionary>/graphs/<slug>.json` through `core.attribution`'s reader (node ids made unique,
  graphs from circuit-tracer and Neuronpedia included). Each feature node gets `feature_index`, its
  index in the replacement model's analyses and annotations (`feature_store_index`), and its label
  as it is now: a person's label, else its explanation (one saved or explained after the graph
  shows at once).
- Computing: a graph takes seconds to minutes, so a request only starts a job (`GraphJobs.submit`,
  HTTP 202) and the viewer polls its progress (rows done of all). A job takes one of the
  GPT2DICT_INFERENCE_CONCURRENCY slots when it is submitted (none free: HTTP 503 at once, as for
  custom text) and keeps it until it ends; it loads the model and replacement model in its own thread
  (the model cache's, shared with custom text and steering), holds the model's lock only for the
  prompt's one forward, and saves the graph when done. The jobs are the app's (server/jobs.py: slots,
  threads, finished jobs kept an hour), shown in the graph page's shape (`GraphJobs.status`).
- Interventions: a few forwards, computed in a slot like steering (the endpoint's caller does that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from core.attribution import attribute, list_graphs, load_graph_file, save_graph
from core.attribution.graph_file import (FEATURE_TYPE, GRAPH_SUFFIX, feature_store_index, graph_path, slugify)
from core.layout import graphs_folder
from core.store import StoreError

from .explanations import page_explanations
from .inference import ModelCache
from .jobs import Job, Jobs
from .results import DictionaryInfo, NotFound, ResultsFolder

GRAPH_JOB = "graph"
"""The kind of a graph job among the app's jobs."""
GRAPH_STAGES = ("loading", "running", "saving")


def saved_graph_count(folder: Path) -> int:
    graphs = graphs_folder(folder)
    return sum(1 for _ in graphs.glob(f"*{GRAPH_SUFFIX}")) if graphs.is_dir() else 0


def graph_summaries(info: DictionaryInfo) -> list[dict[str, Any]]:
    return list_graphs(info.folder)


def feature_key(node: dict) -> tuple[int, int]:
    """(layer, feature) of a feature node (`{layer}_{feature}_{pos}`)."""
    return int(float(node["layer"])), int(str(node["node_id"]).split("_")[1])


def read_graph(results: ResultsFolder, info: DictionaryInfo, slug: str) -> dict[str, Any]:
    """The graph `slug` of a replacement model, its feature nodes with their index in the dictionary's
    analyses and their labels as they are now (NotFound when there is no such graph)."""
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
    labels = current_labels(results, info, {n["feature_index"] for n in features if n["feature_index"] is not None})
    for node in features:
        if node["feature_index"] in labels:
            node["clerp"] = labels[node["feature_index"]]
    data["replacement"] = {"kind": info.kind, "layers": layers, "d_sae": d_sae}
    return data


def current_labels(results: ResultsFolder, info: DictionaryInfo, indices: set[int]) -> dict[int, str]:
    """{index: label} of these features of the dictionary as they are now: a person's label, else the
    explanation in the first analysis (by name) that explains the feature (its default explanation set);
    features with neither are left out, so a graph keeps the label it was saved with
    (`core.attribution.graph_file.feature_labels` chose it the same way then)."""
    found = {i: note.label for i, note in results.annotations(info.name).many(indices).items() if note.label}
    for analysis in results.analysis_names(info.name):
        missing = [i for i in indices if i not in found]
        if not missing:
            break
        try:
            found.update(page_explanations(results.explanations(info.name, analysis), missing))
        except (NotFound, StoreError):  # an analysis that cannot be read labels nothing
            continue
    return found


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


class GraphJobs:
    """Graph computations: jobs of the app's runner (server/jobs.py, kind "graph"), each holding an
    inference slot; their progress in the shape the graph page reads (`status`)."""

    def __init__(self, jobs: Jobs, models: ModelCache) -> None:
        self.jobs, self.models = jobs, models

    def submit(self, info: DictionaryInfo, prompt: str, *, slug: Optional[str], settings: dict[str, Any],
               node_threshold: float, edge_threshold: float) -> Job:
        """Start computing the graph of `prompt`; InferenceBusy when no inference slot is free."""
        subject = {"slug": self._free_slug(info, slug or slugify(prompt)), "prompt": prompt}
        return self.jobs.submit(GRAPH_JOB, info.name, subject, 0,
                                lambda job: self._run(job, info, settings, node_threshold, edge_threshold))

    def get(self, job_id: str) -> Job:
        return self.jobs.get(job_id, kind=GRAPH_JOB)

    @staticmethod
    def status(job: Job) -> dict[str, Any]:
        """A graph job as GET /api/graph-jobs/{id} answers it: `status` loading (the model), running, saving,
        done or failed; `done` of `total` rows computed."""
        status = job.status if job.status in ("done", "failed") else job.stage if job.stage in GRAPH_STAGES \
            else "loading"
        return {"id": job.id, "dictionary": job.dictionary, **job.subject, "status": status, "done": job.step,
                "total": job.steps, "error": job.error, "seconds": job.seconds}

    def _free_slug(self, info: DictionaryInfo, slug: str) -> str:
        """`slug`, or `slug-2`, `slug-3`, ... when a graph or a running job has it already."""
        taken = {j.subject["slug"] for j in self.jobs.of_kind(GRAPH_JOB, info.name) if j.status != "failed"}
        candidate, n = slug, 1
        while candidate in taken or graph_path(info.folder, candidate).exists():
            n += 1
            candidate = f"{slug}-{n}"
        return candidate

    def _run(self, job: Job, info: DictionaryInfo, settings: dict[str, Any], node_threshold: float,
             edge_threshold: float) -> dict[str, Any]:
        job.begin(0, "loading")
        pair = self.models.get(info)
        job.begin(0, "running")

        def progress(done: int, total: int) -> None:
            job.step, job.steps = done, total

        graph = attribute(job.subject["prompt"], pair.sae, pair.model, progress=progress, model_lock=pair.lock,
                          **settings)
        job.begin(job.step, "saving")
        save_graph(graph, info.folder, slug=job.subject["slug"], node_threshold=node_threshold,
                   edge_threshold=edge_threshold)
        return {"slug": job.subject["slug"]}


__all__ = ["GRAPH_JOB", "GraphJobs", "graph_summaries", "interventions_of", "read_graph", "saved_graph_count"]
