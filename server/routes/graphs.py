"""Attribution graphs of replacement models (server/graphs.py): the saved graphs, a graph with its
feature nodes' analysis indices, saved subgraphs, graph jobs with progress, interventions."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from core.attribution import FeatureIntervention, intervene, save_subgraph

from .. import schemas
from ..graphs import graph_summaries, interventions_of, read_graph
from ..state import Server
from .common import ERRORS
from .inference import in_slot

router = APIRouter(tags=["graphs"])

BUSY = {503: {"model": schemas.ErrorDetail, "description": "every inference slot is busy (or the model is loading); "
                                                          "see Retry-After"}}


@router.get("/api/dictionaries/{name}/graphs", response_model=schemas.GraphList, responses=ERRORS)
def list_graphs(name: str, state: Server):
    """The attribution graphs saved beside a replacement model (`<dictionary>/graphs/`), newest first."""
    return {"graphs": graph_summaries(state.results.dictionary(name))}


@router.get("/api/dictionaries/{name}/graphs/{slug}", response_model=schemas.GraphFile, responses=ERRORS)
def get_graph(name: str, slug: str, state: Server, response: Response):
    """One graph file (Neuronpedia's graph schema), its feature nodes with their index in the
    dictionary's analyses and their current labels."""
    response.headers["Cache-Control"] = "no-store"
    return read_graph(state.results, state.results.dictionary(name), slug)


@router.put("/api/dictionaries/{name}/graphs/{slug}/subgraph", response_model=schemas.GraphQParams, responses=ERRORS)
def put_subgraph(name: str, slug: str, body: schemas.SubgraphEdit, state: Server):
    """Save the graph's subgraph: its pinned nodes and supernodes (named groups), in the file's qParams."""
    info = state.results.dictionary(name)
    read_graph(state.results, info, slug)  # 404 for a graph that does not exist
    return save_subgraph(info.folder, slug, body.model_dump())["qParams"]


@router.post("/api/dictionaries/{name}/graphs", response_model=schemas.GraphJobStatus, status_code=202,
             responses={**ERRORS, **BUSY})
def start_graph(name: str, body: schemas.GraphRequest, state: Server):
    """Start computing the attribution graph of `prompt` through this replacement model: answered at
    once with a job whose progress GET /api/graph-jobs/{id} reports; the graph is saved when done."""
    settings = state.settings
    info = state.results.dictionary(name)
    if info.kind == "sparse_autoencoder":
        raise HTTPException(422, f"Dictionary {name!r} is not a replacement model; attribution graphs need a "
                                 "transcoder set or a cross-layer transcoder.")
    if len(body.prompt) > settings.max_text_chars:
        raise HTTPException(413, f"The prompt has {len(body.prompt)} characters; the limit is "
                                 f"{settings.max_text_chars} (GPT2DICT_MAX_TEXT_CHARS).")
    nodes = body.max_feature_nodes or settings.graph_max_feature_nodes
    if nodes > settings.graph_max_feature_nodes:
        raise HTTPException(422, f"Malformed request: body field 'max_feature_nodes' is {nodes}; the limit is "
                                 f"{settings.graph_max_feature_nodes} (GPT2DICT_GRAPH_MAX_FEATURE_NODES).")
    job = state.graph_jobs.submit(info, body.prompt, slug=body.slug, node_threshold=body.node_threshold,
                                  edge_threshold=body.edge_threshold,
                                  settings=dict(logit_tokens=body.logit_tokens, max_n_logits=body.max_n_logits,
                                                desired_logit_prob=body.desired_logit_prob, max_feature_nodes=nodes,
                                                max_prompt_tokens=settings.graph_max_prompt_tokens,
                                                max_edge_bytes=settings.graph_max_edge_bytes))
    return state.graph_jobs.status(job)


@router.get("/api/graph-jobs/{job_id}", response_model=schemas.GraphJobStatus, responses=ERRORS)
def graph_job(job_id: str, state: Server, response: Response):
    """A graph job's progress: rows computed of all; `failed` with the reason; `done` once saved."""
    response.headers["Cache-Control"] = "no-store"
    return state.graph_jobs.status(state.graph_jobs.get(job_id))


@router.post("/api/dictionaries/{name}/graphs/{slug}/intervene", response_model=schemas.InterventionResponse,
             responses={**ERRORS, **BUSY})
async def intervene_on_graph(name: str, slug: str, body: schemas.InterventionRequest, state: Server):
    """Scale (0: ablate) feature nodes of the graph at their positions in the replacement model and
    return the new most probable next tokens beside the original ones."""
    info = state.results.dictionary(name)
    data = await run_in_threadpool(read_graph, state.results, info, slug)
    planned = interventions_of(data, [(i.node_id, i.scale) for i in body.interventions])
    prompt = data["metadata"].get("prompt_token_ids") or data["metadata"]["prompt"]

    def compute(pair):
        with pair.lock:
            return intervene(prompt, pair.sae, pair.model, [FeatureIntervention(l, p, f, scale=s) for l, p, f, s in planned],
                             top_k=body.top_k, propagate=body.propagate,
                             max_prompt_tokens=state.settings.graph_max_prompt_tokens)

    out = await in_slot(state, info, compute)
    return {"original": [t._asdict() for t in out.original], "intervened": [t._asdict() for t in out.intervened],
            "applied": [dict(zip(("layer", "position", "feature", "activation", "new_activation"), a))
                        for a in out.applied]}
