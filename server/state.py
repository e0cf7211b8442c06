"""What the routes share: one `ServerState` per app, on `app.state.server`, handed to each endpoint
by the `Server` dependency (no module globals, so two apps in one process never share state)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from .compare import EvalCache
from .directions import DecoderCache
from .explanations import Explainer
from .graphs import GraphJobs
from .inference import ModelCache
from .jobs import Jobs
from .replacement import DecoderNorms
from .results import ResultsFolder
from .runs import RunLogs
from .settings import Settings


@dataclass
class ServerState:
    settings: Settings
    results: ResultsFolder
    """The results folder, scanned on every request."""
    models: ModelCache
    """Loaded (language model, dictionary) pairs for custom text and steering."""
    decoders: DecoderCache
    """Normalized decoders for nearest-feature search."""
    decoder_norms: DecoderNorms
    """Replacement models' decoder norms per target layer."""
    run_logs: RunLogs
    """Each run's metrics.jsonl, read incrementally."""
    evals: EvalCache
    """Each dictionary's evaluation results (SAEBench's shape), read once per version of its files."""
    inference_slots: threading.BoundedSemaphore
    """GPT2DICT_INFERENCE_CONCURRENCY slots; a request finding none free is answered 503 at once."""
    graph_jobs: GraphJobs
    """Attribution graphs being computed: jobs of `jobs`, in the graph page's shape."""
    jobs: Jobs
    """Work that outlasts a request (explaining a feature, an attribution graph), each job holding an inference
    slot."""
    explainer: Explainer
    """The language model that explains features on request (GPT2DICT_EXPLAIN_*)."""

    @classmethod
    def of(cls, settings: Settings) -> "ServerState":
        results = ResultsFolder(settings.results_dir)
        models = ModelCache(size=settings.model_cache_size, device=settings.device, results_root=results.root,
                            failure_ttl_s=settings.model_load_failure_ttl_s)
        slots = threading.BoundedSemaphore(settings.inference_concurrency)
        jobs = Jobs(slots, settings.inference_concurrency)
        return cls(settings=settings, results=results, models=models, decoders=DecoderCache(),
                   decoder_norms=DecoderNorms(), run_logs=RunLogs(), evals=EvalCache(), inference_slots=slots,
                   jobs=jobs, graph_jobs=GraphJobs(jobs, models),
                   explainer=Explainer(settings.explain_backend_config, score=settings.explain_score))


async def server_state(request: Request) -> ServerState:
    # async: FastAPI runs it on the event loop, so the inference endpoints still turn a request away
    # without handing anything to a thread.
    return request.app.state.server


Server = Annotated[ServerState, Depends(server_state)]
"""An endpoint's parameter `state: Server` receives the app's ServerState."""
