"""Attribution graphs through the server (server/graphs.py): a replacement model listed with its graphs,
a graph read with its feature nodes' analysis indices and current labels, a saved subgraph, a graph
computed as a job with progress (and the inference slots' 503), interventions on its feature nodes."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from core.attribution import load_graph_file
from server.app import create_app
from tests.server_helpers import (DICT, GRAPH_DICT, GRAPH_PROMPT, GRAPH_RUN, GRAPH_SLUG, RUN, assert_error,
                                  local_client, make_settings)


@pytest.fixture()
def results(graph_run, analysis_dir, tiny_results_dir, tmp_path):
    """A private results folder: the graph run, and the tiny SAE's run (not a replacement model)."""
    folder = tmp_path / "results"
    shutil.copytree(graph_run, folder / GRAPH_RUN)
    shutil.copytree(tiny_results_dir / RUN, folder / RUN, ignore=shutil.ignore_patterns("checkpoints"))
    return folder


@pytest.fixture()
def app(results):
    return create_app(make_settings(results, graph_max_prompt_tokens=12, graph_max_feature_nodes=150))


def graph_url(slug: str = GRAPH_SLUG) -> str:
    return f"/api/dictionaries/{GRAPH_DICT}/graphs/{slug}"


def wait_for(client, job: dict, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while job["status"] not in ("done", "failed"):
        assert time.time() < deadline, job
        time.sleep(0.2)
        job = client.get(f"/api/graph-jobs/{job['id']}").json()
    return job


def test_replacement_models_are_listed_with_their_graphs(app):
    with local_client(app) as client:
        listed = {d["name"]: d for d in client.get("/api/dictionaries").json()["dictionaries"]}
        assert listed[GRAPH_DICT]["kind"] == "transcoder_set" and listed[GRAPH_DICT]["layers"] == [1]
        assert listed[GRAPH_DICT]["graphs"] == 1 and listed[GRAPH_DICT]["analyses"] == ["default"]
        assert listed[DICT]["kind"] == "sparse_autoencoder" and listed[DICT]["graphs"] == 0
        graphs = client.get(f"/api/dictionaries/{GRAPH_DICT}/graphs").json()["graphs"]
        assert [(g["slug"], g["prompt"], g["error"]) for g in graphs] == [(GRAPH_SLUG, GRAPH_PROMPT, None)]
        assert 0 < graphs[0]["scores"]["replacement"] < 1 and graphs[0]["n_links"] > 0


def test_a_graph_with_analysis_indices_and_current_labels(app, results):
    with local_client(app) as client:
        graph = client.get(graph_url()).json()
        assert graph["replacement"] == {"kind": "transcoder_set", "layers": [1], "d_sae": 96}
        feature = next(n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder")
        index = int(feature["node_id"].split("_")[1])  # one layer: the analysis index is the feature's own
        assert feature["feature_index"] == index and feature["clerp"] == ""
        card = client.get(f"/api/dictionaries/{GRAPH_DICT}/analyses/default/features/{index}").json()
        assert card["index"] == index
        saved = client.put(f"/api/dictionaries/{GRAPH_DICT}/features/{index}/annotation",
                           json={"label": "after the cat", "notes": "", "bookmarked": False, "version": 0})
        assert saved.status_code == 200, saved.text
        again = client.get(graph_url()).json()
        assert next(n for n in again["nodes"] if n["node_id"] == feature["node_id"])["clerp"] == "after the cat"
        assert_error(client.get(graph_url("nothing")), 404, "no graph named 'nothing'")
        assert_error(client.get(f"/api/dictionaries/{GRAPH_DICT}/graphs/..%2Fx"), 404)


def test_a_feature_without_a_label_shows_its_explanation_as_it_is_now(app, results):
    """Explanations written after the graph was saved label its feature nodes; a person's label comes first."""
    from core import BackendConfig, Explanations, explain_features
    from tests.autointerp_helpers import MisbehavingServer, token_reader

    with local_client(app) as client:
        features = [n for n in client.get(graph_url()).json()["nodes"] if n["feature_type"] == "cross layer transcoder"]
        alive = [i for i in sorted({n["feature_index"] for n in features})
                 if client.get(f"/api/dictionaries/{GRAPH_DICT}/analyses/default/features/{i}").json()["act_count"]]
        indices = alive[:2]
        analysis = results / GRAPH_RUN / "dictionaries" / "mlp1" / "analysis" / "default"
        server = MisbehavingServer(token_reader)
        try:
            explain_features(analysis, indices, progress=False, backend=BackendConfig(
                kind="openai", base_url=server.base_url, model="token-reader", probabilities="none"))
        finally:
            server.close()
        with Explanations(analysis) as reader:
            explained = {e.feature_index: e.explanation for e in reader.explanations(features=indices, status="ok")}
        assert set(explained) == set(indices)
        client.put(f"/api/dictionaries/{GRAPH_DICT}/features/{indices[1]}/annotation",
                   json={"label": "a person's label", "version": 0}).raise_for_status()
        clerps = {n["feature_index"]: n["clerp"] for n in client.get(graph_url()).json()["nodes"]
                  if n["feature_type"] == "cross layer transcoder"}
        assert clerps[indices[0]] == explained[indices[0]] and clerps[indices[1]] == "a person's label"


def test_a_subgraph_is_saved_in_the_file(app, results):
    with local_client(app) as client:
        nodes = client.get(graph_url()).json()["nodes"]
        ids = [n["node_id"] for n in nodes if n["feature_type"] == "cross layer transcoder"][:3]
        body = {"pinnedIds": ids, "supernodes": [["first two", *ids[:2]]], "clickedId": ids[0]}
        r = client.put(graph_url() + "/subgraph", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["supernodes"] == [["first two", *ids[:2]]]
        path = results / GRAPH_RUN / "dictionaries" / "mlp1" / "graphs" / f"{GRAPH_SLUG}.json"
        assert load_graph_file(path)["qParams"]["pinnedIds"] == ids
        assert client.get(graph_url()).json()["qParams"]["clickedId"] == ids[0]
        assert_error(client.put(graph_url() + "/subgraph", json={"pinnedIds": ["9_9_9"]}), 422, "not a node")
        assert_error(client.put(graph_url() + "/subgraph", json={"supernodes": [["lonely"]]}), 422, "at least one node")


def test_a_graph_is_computed_as_a_job(app, results):
    with local_client(app) as client:
        r = client.post(f"/api/dictionaries/{GRAPH_DICT}/graphs", json={"prompt": "The dog ran to the"})
        assert r.status_code == 202, r.text
        job = wait_for(client, r.json())
        assert job["status"] == "done" and job["done"] == job["total"] > 0 and job["slug"] == "the-dog-ran-to-the"
        assert [g["slug"] for g in client.get(f"/api/dictionaries/{GRAPH_DICT}/graphs").json()["graphs"]][0] == job["slug"]
        generic = client.get(f"/api/jobs/{job['id']}").json()  # one runner for every kind of job
        assert (generic["kind"], generic["status"], generic["slug"], generic["result"]) == \
            ("graph", "done", job["slug"], {"slug": job["slug"]})
        data = client.get(graph_url(job["slug"])).json()
        assert data["metadata"]["prompt"] == "The dog ran to the"
        assert data["metadata"]["generation_settings"]["max_feature_nodes"] == 150  # the server's limit is the default

        second = wait_for(client, client.post(f"/api/dictionaries/{GRAPH_DICT}/graphs",
                                               json={"prompt": "The dog ran to the"}).json())
        assert second["slug"] == "the-dog-ran-to-the-2"  # an existing graph is never overwritten

        long = wait_for(client, client.post(f"/api/dictionaries/{GRAPH_DICT}/graphs",
                                             json={"prompt": "one two three four five six seven eight nine ten eleven "
                                                             "twelve thirteen"}).json())
        assert long["status"] == "failed" and "attribution graphs take at most 12" in long["error"]
        assert_error(client.post(f"/api/dictionaries/{GRAPH_DICT}/features/0/steer", json={"prompt": "x", "strength": 1}),
                     422, "is a replacement model")
        assert_error(client.post(f"/api/dictionaries/{GRAPH_DICT}/graphs", json={"prompt": "x", "max_feature_nodes": 151}),
                     422, "GPT2DICT_GRAPH_MAX_FEATURE_NODES")
        assert_error(client.post(f"/api/dictionaries/{DICT}/graphs", json={"prompt": "x"}), 422,
                     "not a replacement model")
        assert_error(client.get("/api/graph-jobs/unknown"), 404, "No graph job")


def test_a_graph_job_needs_an_inference_slot(app):
    with local_client(app) as client:
        slots = app.state.server.inference_slots
        assert slots.acquire(blocking=False)  # another computation holds the only slot
        try:
            r = client.post(f"/api/dictionaries/{GRAPH_DICT}/graphs", json={"prompt": "The dog ran to the"})
            assert_error(r, 503, "inference slot")
            assert int(r.headers["Retry-After"]) > 0
        finally:
            slots.release()


def test_interventions_on_feature_nodes(app):
    with local_client(app) as client:
        graph = client.get(graph_url()).json()
        features = [n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"]
        r = client.post(graph_url() + "/intervene",
                        json={"interventions": [{"node_id": n["node_id"], "scale": 0.0} for n in features[:3]],
                              "top_k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        top_logit = next(n for n in graph["nodes"] if n["is_target_logit"])
        assert body["original"][0]["token_id"] == top_logit["feature"] and len(body["intervened"]) == 5
        assert [a["new_activation"] for a in body["applied"]] == [0.0] * 3
        assert [a["activation"] for a in body["applied"]] == pytest.approx([n["activation"] for n in features[:3]])
        assert body["intervened"] != body["original"]  # ablating the graph's features changes the prediction
        assert_error(client.post(graph_url() + "/intervene", json={"interventions": [{"node_id": "E_464_1"}]}), 404,
                     "not a feature node")
        assert_error(client.post(graph_url() + "/intervene", json={"interventions": []}), 422)
