"""The viewer as a research tool, against the real app and real files: search by token / phrase
(the analysis' token index), by direction (decoder cosine, within a dictionary and across comparable
ones), by label; labels, notes and bookmarks with version checks; steering; run pages from
metrics.jsonl (also while it grows); the generated UI types. Bad input gets one clear error each."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest
import torch

from core.sae import load_dictionary
from core.steering import steer as core_steer
from core.store import FeatureStore
from server.app import create_app
from tests.conftest import ROOT, TINY_HOOK
from tests.server_helpers import (DICT, RUN, SWEEP_K, SWEEP_RUN, analyses_folder, assert_error, dictionary_folder,
                                  features_url, local_client, make_settings, uvicorn_server)

SWEEP_IDS = [f"{SWEEP_RUN}:{TINY_HOOK}-k{k}" for k in sorted(SWEEP_K, key=str)]
"""The sweep's dictionary ids, sorted as the server lists them (by name)."""


@pytest.fixture()
def results(results_copy, tiny_sweep_run):
    """A private results folder: the tiny run with its analysis, and the sweep run of three dictionaries."""
    shutil.copytree(tiny_sweep_run, results_copy / SWEEP_RUN, ignore=shutil.ignore_patterns("checkpoints"))
    return results_copy


@pytest.fixture()
def client(results):
    with local_client(create_app(make_settings(results, steer_max_new_tokens=16))) as c:
        yield c


@pytest.fixture(scope="module")
def store(analysis_dir):
    with FeatureStore(analysis_dir) as s:
        yield s


def search_url(name: str = DICT, analysis: str = "default") -> str:
    return f"/api/dictionaries/{name}/analyses/{analysis}/search/tokens"


def feature_url(index: int, name: str = DICT) -> str:
    return f"/api/dictionaries/{name}/features/{index}"


# ----------------------------------------------------------------------------------------------
# Search by token or phrase


def test_token_search_answers_from_the_index(client, store):
    body = client.get(search_url(), params={"q": " the", "limit": 5}).json()
    expected = store.search_tokens(" the", limit=5)
    assert body["tokens"] == [{"token_id": 262, "token": " the", "occurrences": expected.tokens[0].occurrences}]
    assert body["tokens"][0]["occurrences"] > 0 and body["index_size"] == expected.index_size
    assert [m["index"] for m in body["matches"]] == [m.index for m in expected.matches] and len(body["matches"]) == 5
    for match in body["matches"]:
        stats = store.get_feature(match["index"]).stats
        assert match["max_act"] == stats.max_act and match["density"] == stats.density and match["label"] == ""
        assert 0 < match["acts"][0] <= stats.max_act  # its max on " the" is at most its max anywhere
    assert client.get(search_url(), params={"token_id": 262, "limit": 5}).json() == body


def test_phrase_search_ranks_features_of_more_tokens_first(client):
    body = client.get(search_url(), params={"q": " the function", "limit": 50}).json()
    assert [t["token"] for t in body["tokens"]] == [" the", " function"]
    keys = [(-m["n_tokens"], -m["score"]) for m in body["matches"]]
    assert keys == sorted(keys)
    for m in body["matches"]:
        assert m["n_tokens"] == sum(a is not None for a in m["acts"])
        assert m["score"] == pytest.approx(sum(a for a in m["acts"] if a is not None))


def test_token_search_labels_come_from_the_annotations(client):
    top = client.get(search_url(), params={"q": " the", "limit": 1}).json()["matches"][0]["index"]
    assert client.put(f"{feature_url(top)}/annotation", json={"label": "the-ish", "version": 0}).status_code == 200
    assert client.get(search_url(), params={"q": " the", "limit": 1}).json()["matches"][0]["label"] == "the-ish"


@pytest.mark.parametrize("params, status, words", [
    ({}, 422, ["exactly one", "'q'", "'token_id'"]),
    ({"q": " the", "token_id": 262}, 422, ["exactly one"]),
    ({"q": ""}, 422, ["'q'", "at least 1 character"]),
    ({"q": "x" * 201}, 422, ["'q'", "at most 200"]),
    ({"token_id": 50257}, 404, ["token id 50257 is not in the vocabulary", "0..50256"]),
    ({"token_id": -1}, 422, ["'token_id'"]),
    ({"q": " the", "limit": 0}, 422, ["'limit'"]),
    ({"q": " ".join(f"w{i}" for i in range(20))}, 422, ["limit is 16"]),
])
def test_token_search_bad_input(client, params, status, words):
    assert_error(client.get(search_url(), params=params), status, *words)


def test_token_search_in_an_older_store_says_to_rerun(client, results):
    old = analyses_folder(results) / "schema-1"
    old.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "store_v1.sqlite", old / "features.sqlite")
    assert_error(client.get(search_url(analysis="schema-1"), params={"q": "tok5"}), 404, "rerun the analysis")
    assert client.get(f"{features_url(analysis='schema-1')}/5").status_code == 200  # the rest still reads


# ----------------------------------------------------------------------------------------------
# Search by direction


def decoder(folder) -> torch.Tensor:
    w = load_dictionary(folder).W_dec.detach().float()
    return w / w.norm(dim=1, keepdim=True)


def test_nearest_features_by_decoder_cosine_within_the_dictionary(client, results):
    body = client.get(f"{feature_url(7)}/similar", params={"limit": 10}).json()
    assert body["dictionary"] == DICT and body["analyses"] == ["default"]
    assert body["comparable"] == SWEEP_IDS  # same model and hook
    w = decoder(dictionary_folder(results))
    cosines = w @ w[7]
    cosines[7] = -2
    expected = cosines.topk(10)
    assert [n["index"] for n in body["neighbours"]] == expected.indices.tolist()
    assert [n["cosine"] for n in body["neighbours"]] == pytest.approx(expected.values.tolist(), abs=1e-5)
    assert 7 not in [n["index"] for n in body["neighbours"]]


def test_nearest_features_in_another_dictionary(client, results, tiny_sweep_run):
    other = SWEEP_IDS[0]
    body = client.get(f"{feature_url(7)}/similar", params={"dictionary": other, "limit": 5}).json()
    assert body["dictionary"] == other and body["analyses"] == [] and body["comparable"] == SWEEP_IDS
    cosines = decoder(results / SWEEP_RUN / "dictionaries" / other.split(":")[1]) @ decoder(dictionary_folder(results))[7]
    assert [n["index"] for n in body["neighbours"]] == cosines.topk(5).indices.tolist()


def test_nearest_features_bad_input(client, results):
    shutil.copytree(dictionary_folder(results), dictionary_folder(results, "elsewhere"))
    config = dictionary_folder(results, "elsewhere") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hook_name": "blocks.1.hook_resid_post"}))
    assert_error(client.get(f"{feature_url(7)}/similar", params={"dictionary": f"elsewhere:{TINY_HOOK}"}), 422,
                 "not comparable", "blocks.1.hook_resid_post")
    assert_error(client.get(f"{feature_url(7)}/similar", params={"dictionary": "nope"}), 404, "nope")
    assert_error(client.get(f"{feature_url(128)}/similar"), 404, "0..127")
    assert_error(client.get(f"{feature_url(7)}/similar", params={"limit": 201}), 422, "'limit'")
    (dictionary_folder(results, "elsewhere") / "sae.safetensors").unlink()
    config.write_text(json.dumps({**json.loads(config.read_text()), "hook_name": TINY_HOOK}))  # comparable again
    assert_error(client.get(f"{feature_url(7)}/similar", params={"dictionary": f"elsewhere:{TINY_HOOK}"}), 500,
                 "Cannot read the decoder", "sae.safetensors")
    assert client.get(f"{feature_url(7)}/similar").status_code == 200  # the others still answer


# ----------------------------------------------------------------------------------------------
# Labels, notes, bookmarks


def test_annotation_round_trip_version_check_and_table_labels(client):
    url = f"{feature_url(5)}/annotation"
    assert client.get(url).json() == {"index": 5, "label": "", "notes": "", "bookmarked": False, "version": 0,
                                      "updated_at": None}
    saved = client.put(url, json={"label": "closing brackets", "notes": "also `)`", "bookmarked": True, "version": 0})
    assert saved.status_code == 200 and saved.json()["version"] == 1
    assert client.get(url).json() == saved.json()
    # A second tab still holds version 0: refused, and the first tab's text comes back.
    stale = client.put(url, json={"label": "mine", "notes": "", "bookmarked": False, "version": 0})
    assert stale.status_code == 409
    assert "version 0" in stale.json()["detail"] and stale.json()["current"] == saved.json()
    assert client.get(url).json()["label"] == "closing brackets"
    # The feature table shows labels and bookmarks, and filters to the bookmarked ones.
    rows = {r["index"]: r for r in client.get(features_url(), params={"sort": "index", "order": "asc",
                                                                      "limit": 10}).json()["features"]}
    assert (rows[5]["label"], rows[5]["bookmarked"]) == ("closing brackets", True)
    assert (rows[4]["label"], rows[4]["bookmarked"]) == ("", False)
    marked = client.get(features_url(), params={"bookmarked": "true"}).json()
    assert marked["total"] == 1 and [r["index"] for r in marked["features"]] == [5]


def test_search_by_label_and_export(client, results):
    for index, label in ((9, "numbers"), (3, "brackets and numbers"), (11, "dates")):
        client.put(f"{feature_url(index)}/annotation", json={"label": label, "version": 0})
    found = client.get(f"/api/dictionaries/{DICT}/annotations", params={"q": "NUMBERS"}).json()["annotations"]
    assert [a["index"] for a in found] == [3, 9]
    exported = client.get(f"/api/dictionaries/{DICT}/annotations/export").json()
    assert exported["dictionary"]["id"] == DICT and exported["dictionary"]["d_sae"] == 128
    assert [a["index"] for a in exported["annotations"]] == [3, 9, 11]
    from core.annotations import export_annotations

    library = export_annotations(dictionary_folder(results), dictionary_id=DICT)
    assert {**library, "exported_at": None} == {**exported, "exported_at": None}
    assert (dictionary_folder(results) / "annotations.sqlite").is_file()  # beside the analyses, not in them


@pytest.mark.parametrize("body, status, words", [
    ({"label": "x", "version": 0, "notes": "n" * 10_001}, 422, ["'notes'", "at most 10000"]),
    ({"label": "x" * 121, "version": 0}, 422, ["'label'", "at most 120"]),
    ({"label": "two\nlines", "version": 0}, 422, ["one line"]),
    ({"label": "x"}, 422, ["'version'", "Field required"]),
    ({"label": "x", "version": -1}, 422, ["'version'"]),
    ({"label": "x", "version": 0, "colour": "red"}, 422, ["'colour'"]),
    ({"label": 5, "version": 0}, 422, ["'label'"]),
])
def test_annotation_bad_input(client, body, status, words):
    assert_error(client.put(f"{feature_url(2)}/annotation", json=body), status, *words)
    assert client.get(f"{feature_url(2)}/annotation").json()["version"] == 0  # nothing saved


def test_annotation_unknown_feature_or_dictionary(client):
    assert_error(client.put(f"{feature_url(128)}/annotation", json={"label": "x", "version": 0}), 404, "0..127")
    assert_error(client.get(f"{feature_url(3, 'nope')}/annotation"), 404, "nope")


def test_concurrent_edits_on_a_real_server_never_lose_a_write(results):
    """Eight clients each save ten times with a read-modify-write loop; every 200 is one kept save."""
    with uvicorn_server(results) as base:
        url = f"{base}{feature_url(1)}/annotation"
        ok, conflicts = [], []

        def client_loop(worker: int):
            with httpx.Client(timeout=30) as http:
                for i in range(10):
                    while True:
                        current = http.get(url).json()
                        r = http.put(url, json={"label": "counter", "notes": current["notes"] + f"{worker}.{i},",
                                                "version": current["version"]})
                        if r.status_code == 200:
                            ok.append(r.json()["version"])
                            break
                        assert r.status_code == 409, r.text
                        conflicts.append(r.json()["current"]["version"])

        threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = httpx.get(url).json()
    assert sorted(ok) == list(range(1, 81)) and final["version"] == 80
    assert sorted(final["notes"].rstrip(",").split(",")) == sorted(f"{w}.{i}" for w in range(8) for i in range(10))


def test_older_runs_keep_annotations_beside_their_analyses(client, results):
    old = results / "old-run"
    shutil.copytree(dictionary_folder(results), old / "dictionary", ignore=shutil.ignore_patterns("analysis"))
    shutil.copytree(analyses_folder(results), old / "analysis")
    assert client.put("/api/dictionaries/old-run/features/4/annotation", json={"label": "old", "version": 0}).json()["version"] == 1
    assert (old / "annotations.sqlite").is_file()
    assert client.get(f"/api/dictionaries/{DICT}").json()["analyses"] == ["default"]
    assert client.get("/api/dictionaries/old-run").json()["analyses"] == ["default"]  # the file is not an analysis


# ----------------------------------------------------------------------------------------------
# Steering


def test_steering_gives_two_continuations(client, tiny_model, tiny_dictionary):
    body = {"prompt": "The quick brown fox", "strength": 30.0, "max_new_tokens": 8}
    r = client.post(f"{feature_url(6)}/steer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    expected = core_steer(tiny_model, load_dictionary(tiny_dictionary), 6, "The quick brown fox", strength=30.0,
                          max_new_tokens=8)
    assert out["steered"]["token_ids"] == expected.steered.token_ids
    assert out["unsteered"]["token_ids"] == expected.unsteered.token_ids
    assert out["steered"]["token_ids"] != out["unsteered"]["token_ids"]
    assert out["prompt_tokens"][1:] == ["The", " quick", " brown", " fox"] and out["hook_name"] == TINY_HOOK
    assert len(out["steered"]["tokens"]) == 8 and out["prompt_cut"] is False
    sampled = {"prompt": "Hello", "strength": 5.0, "max_new_tokens": 6, "temperature": 1.0, "seed": 3}
    first = client.post(f"{feature_url(6)}/steer", json=sampled).json()
    assert client.post(f"{feature_url(6)}/steer", json=sampled).json() == first  # seeded


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": "Hi", "strength": 10_001}, 422, ["'strength'", "less than or equal to 10000"]),
    ({"prompt": "Hi", "strength": -1e6}, 422, ["'strength'"]),
    ({"prompt": "Hi"}, 422, ["'strength'", "Field required"]),
    ({"prompt": "", "strength": 1}, 422, ["'prompt'"]),
    ({"prompt": "Hi", "strength": 1, "max_new_tokens": 17}, 422, ["max_new_tokens", "GPT2DICT_STEER_MAX_NEW_TOKENS"]),
    ({"prompt": "Hi", "strength": 1, "max_new_tokens": 0}, 422, ["'max_new_tokens'"]),
    ({"prompt": "Hi", "strength": 1, "temperature": -1}, 422, ["'temperature'"]),
    ({"prompt": "x" * 301, "strength": 1}, 413, ["GPT2DICT_MAX_TEXT_CHARS"]),
])
def test_steering_bad_input(client, body, status, words):
    assert_error(client.post(f"{feature_url(6)}/steer", json=body), status, *words)


def test_steering_unknown_feature(client):
    assert_error(client.post(f"{feature_url(128)}/steer", json={"prompt": "Hi", "strength": 1}), 404, "0..127")
    assert_error(client.post(f"{feature_url(1, 'nope')}/steer", json={"prompt": "Hi", "strength": 1}), 404, "nope")


def test_steering_shares_the_inference_slots(results, deep_gpt2_dir):
    """While a slow steering request computes, custom text and other steering requests get 503 at once."""
    from tests.test_server_limits import add_deep_dictionary

    deep = add_deep_dictionary(results, deep_gpt2_dir)
    with uvicorn_server(results, {"GPT2DICT_STEER_MAX_NEW_TOKENS": "40"}) as base, \
            httpx.Client(base_url=base, timeout=120) as http:
        assert http.post(f"/api/dictionaries/{deep}/activations", json={"text": "warm"}).status_code == 200
        slow = {}
        worker = threading.Thread(target=lambda: slow.setdefault("r", http.post(
            f"{feature_url(3, deep)}/steer", json={"prompt": "word " * 40, "strength": 1, "max_new_tokens": 40})))
        worker.start()
        busy = []
        with httpx.Client(base_url=base, timeout=30) as other:
            while worker.is_alive() and len(busy) < 2:
                r = (other.post(f"/api/dictionaries/{DICT}/activations", json={"text": "Hello"}) if not busy else
                     other.post(f"{feature_url(3)}/steer", json={"prompt": "Hi", "strength": 1, "max_new_tokens": 2}))
                if r.status_code == 503:
                    assert r.headers["retry-after"] == "1"
                    assert_error(r, 503, "GPT2DICT_INFERENCE_CONCURRENCY")
                    busy.append(r)
                time.sleep(0.05)
        worker.join()
        assert slow["r"].status_code == 200 and len(busy) == 2


@pytest.fixture(scope="module")
def deep_gpt2_dir(tmp_path_factory):
    from tests.test_server_limits import DEEP_LAYERS
    from tests.tiny_gpt2 import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("deep-gpt2") / "model", n_layer=DEEP_LAYERS, seed=1)


# ----------------------------------------------------------------------------------------------
# Runs


def test_runs_list_and_sweep_run_page(client, results):
    runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert sorted(runs) == sorted([RUN, SWEEP_RUN])
    assert runs[SWEEP_RUN]["dictionaries"] == SWEEP_IDS and runs[SWEEP_RUN]["has_metrics"]
    run = client.get(f"/api/runs/{SWEEP_RUN}").json()
    assert run["finished"] and run["skipped_lines"] == 0 and run["config"]["exp_name"] == SWEEP_RUN
    assert [s["id"] for s in run["series"]] == SWEEP_IDS
    lines = [json.loads(line) for line in (results / SWEEP_RUN / "metrics.jsonl").read_text().splitlines()]
    assert run["lines"] == len(lines)
    for series in run["series"]:
        logged = [r for r in lines if r.get("dictionary") == series["name"] and "loss" in r]
        assert series["train"]["tokens"] == [r["tokens"] for r in logged]
        assert series["train"]["values"]["l0"] == pytest.approx([r["l0"] for r in logged])
        assert series["train"]["values"]["dead_features"] == [r["dead_features"] for r in logged]
        assert len(series["eval"]["tokens"]) == len([r for r in lines if r.get("dictionary") == series["name"]
                                                     and "eval" in r]) > 0
        metrics = client.get(f"/api/dictionaries/{series['id']}").json()["metrics"]
        assert series["final"]["l0"] == metrics["l0"]
        assert series["final"]["ce_loss_recovered"] == metrics["ce_loss_recovered"]
    assert_error(client.get("/api/runs/nope"), 404, "nope")
    assert_error(client.get(f"/api/runs/{DICT}"), 404, "not a run name")
    assert_error(client.get("/api/runs/..%2F.."), 404)


def test_a_run_in_progress_is_read_as_it_grows(client, results):
    """Lines appended between requests appear; a torn last line waits for its newline; a rewrite
    (a resumed run truncating the log) is read again from the start."""
    live = results / "live-run"
    live.mkdir()
    log = live / "metrics.jsonl"

    def line(step, **extra):
        return json.dumps({"step": step, "tokens": step * 100, "dictionary": "a", "loss": 1 / step, "l0": 5.0,
                           "explained_variance": 0.5, "dead_features": 0, **extra}) + "\n"

    log.write_text(line(1) + line(2))
    first = client.get("/api/runs/live-run").json()
    assert first["series"][0]["train"]["tokens"] == [100, 200] and not first["finished"]
    assert first["series"][0]["id"] is None and first["series"][0]["final"] is None
    torn = line(4)
    with log.open("a") as f:
        f.write(line(3) + torn[:20])  # a kill in the middle of a write
    second = client.get("/api/runs/live-run").json()
    assert second["series"][0]["train"]["tokens"] == [100, 200, 300] and second["skipped_lines"] == 0
    with log.open("a") as f:
        f.write(torn[20:] + json.dumps({"step": 4, "tokens": 400, "dictionary": "a",
                                        "final_eval": {"l0": 4.5, "explained_variance": 0.7}}) + "\n")
    third = client.get("/api/runs/live-run").json()
    assert third["series"][0]["train"]["tokens"] == [100, 200, 300, 400] and third["finished"]
    assert third["series"][0]["final"]["l0"] == 4.5
    from core.files import atomic_write

    atomic_write(log, line(1) + "not json\n")  # resumed from step 1: rewritten
    fourth = client.get("/api/runs/live-run").json()
    assert fourth["series"][0]["train"]["tokens"] == [100] and fourth["skipped_lines"] == 1


def test_a_long_log_is_thinned_to_bounded_points(results):
    from core.runs import MetricsLog
    from server.runs import MAX_POINTS, RunCurves

    log = results / "long.jsonl"
    with log.open("w") as f:
        for step in range(1, 5001):
            f.write(json.dumps({"step": step, "tokens": step, "loss": 1.0, "l0": 3.0}) + "\n")
    parsed = RunCurves(MetricsLog(log)).refresh()
    series = parsed.curves[""].train.to_dict()
    assert series["points"] == 5000 and MAX_POINTS // 2 <= len(series["tokens"]) <= MAX_POINTS + 1
    assert series["tokens"][0] == 1 and series["tokens"][-1] == 5000  # the newest point is always there
    gaps = {b - a for a, b in zip(series["tokens"], series["tokens"][1:-1])}
    assert len(gaps) == 1  # evenly thinned


def test_an_older_run_lists_its_one_dictionary(client, results):
    old = results / "old-run"
    shutil.copytree(dictionary_folder(results), old / "dictionary", ignore=shutil.ignore_patterns("analysis"))
    (old / "metrics.jsonl").write_text(json.dumps({"step": 1, "tokens": 10, "loss": 0.5, "l0": 3}) + "\n")
    run = client.get("/api/runs/old-run").json()
    assert run["dictionaries"] == ["old-run"] and [(s["name"], s["id"]) for s in run["series"]] == [("", "old-run")]


# ----------------------------------------------------------------------------------------------
# One API contract


def test_generated_ui_types_match_the_servers_schema(tmp_path):
    """ui/src/api-schema.ts is generated from the OpenAPI schema (python -m server.openapi); when an
    endpoint or a schema changes without regenerating it, this fails."""
    from server.openapi import STALE, generate_types, main

    fresh = generate_types(tmp_path / "api-schema.ts")
    committed = ROOT / "ui" / "src" / "api-schema.ts"
    assert committed.read_text() == fresh.read_text(), STALE
    # `python -m server.openapi --check` says so with its exit status
    stale = tmp_path / "stale.ts"
    stale.write_text(fresh.read_text().replace("export interface paths", "export interface old_paths"))
    assert main(["--check", "--output", str(stale)]) == 1


def test_openapi_documents_the_research_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/dictionaries/{name}/analyses/{analysis}/search/tokens",
                 "/api/dictionaries/{name}/features/{index}/similar", "/api/dictionaries/{name}/annotations",
                 "/api/dictionaries/{name}/annotations/export", "/api/dictionaries/{name}/features/{index}/annotation",
                 "/api/dictionaries/{name}/features/{index}/steer", "/api/runs", "/api/runs/{run}"):
        assert path in paths, path
    assert "409" in paths["/api/dictionaries/{name}/features/{index}/annotation"]["put"]["responses"]
