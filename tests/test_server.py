"""The feature-viewer server against a real feature store (the analyzer's output on the tiny GPT-2).

Most tests use FastAPI's TestClient on `create_app(Settings(...))`, addressed as 127.0.0.1 like a
browser on this machine; one starts a real uvicorn process and talks to it over loopback.
test_server_limits.py and test_server_fuzz.py try to break it. Tests that change a results folder work on a copy in a
temporary folder, never on the shared `tiny_results_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from core.store import FeatureStore, SORT_KEYS, json_ready
from server.app import create_app
from server.settings import Settings
from tests.conftest import ROOT, TINY_HOOK
from tests.server_helpers import (DICT, MAX_CHARS, MAX_TOKENS, RUN, TEXT, analyses_folder, assert_error,
                                  dictionary_folder, features_url, local_client, make_settings, uvicorn_server)


@pytest.fixture(scope="module")
def store(analysis_dir):
    with FeatureStore(analysis_dir) as s:
        yield s


@pytest.fixture(scope="module")
def client(analysis_dir, tiny_results_dir):
    with local_client(create_app(make_settings(tiny_results_dir))) as c:
        yield c


# ----------------------------------------------------------------------------------------------
# Browsing


def test_health(client, tiny_results_dir):
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "results_dir": str(tiny_results_dir.absolute()), "n_dictionaries": 1}


def test_list_dictionaries(client, tiny_dictionary, tiny_gpt2_dir):
    r = client.get("/api/dictionaries")
    assert r.status_code == 200
    dictionaries = r.json()["dictionaries"]
    assert [d["name"] for d in dictionaries] == [DICT]
    d = dictionaries[0]
    config = json.loads((tiny_dictionary / "config.json").read_text())
    assert set(d) == {"name", "run", "model_name", "hook_name", "hook_out", "architecture", "kind", "layers", "d_in",
                      "d_sae", "n_features", "metrics", "analyses", "source", "graphs"}
    assert d["graphs"] == 0
    assert (d["run"], d["hook_out"], d["source"]) == (RUN, None, None)  # trained here: no provenance
    assert (d["kind"], d["layers"], d["n_features"]) == ("sparse_autoencoder", None, 128)
    assert d["model_name"] == str(tiny_gpt2_dir) == config["model_name"]
    assert d["hook_name"] == TINY_HOOK
    assert (d["architecture"], d["d_in"], d["d_sae"]) == ("topk", 64, 128)
    assert d["analyses"] == ["default"]
    # The scalar evaluation metrics, as saved; nested ones (histograms) stay in the config.
    assert d["metrics"]["l0"] == pytest.approx(config["metrics"]["l0"])
    assert {"explained_variance", "ce_loss_recovered", "unfired_features"} <= set(d["metrics"])
    assert all(isinstance(v, (int, float)) or v is None for v in d["metrics"].values())


def test_dictionary_detail(client, tiny_dictionary, store):
    r = client.get(f"/api/dictionaries/{DICT}")
    assert r.status_code == 200
    body = r.json()
    assert body["config"] == json.loads((tiny_dictionary / "config.json").read_text())
    assert body["analyses"] == ["default"]
    summary = store.summary()
    assert body["analysis_summaries"] == [{
        "name": "default", "n_tokens": summary.n_tokens, "n_features": 128, "n_alive": summary.n_alive,
        "n_dead": summary.n_dead, "density_histogram": json_ready(summary.density_histogram), "explanations": None}]
    assert body["layer_metrics"] is None  # an SAE: no layers
    assert summary.n_tokens > 0 and summary.n_alive > 0


def row(stats) -> dict:
    """A feature-table row: the store's statistics, and the label and bookmark (none in the shared folder)."""
    return {**json_ready(stats), "label": "", "bookmarked": False, "explanation": None, "detection": None, "fuzzing": None,
            "layer": None}


@pytest.mark.parametrize("sort", SORT_KEYS)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_feature_list_sorting_matches_store(client, store, sort, order):
    r = client.get(features_url(), params={"sort": sort, "order": order, "limit": 500})
    assert r.status_code == 200
    body = r.json()
    total, expected = store.list_features(sort=sort, descending=order == "desc", limit=500)
    assert body["total"] == total == 128
    assert (body["offset"], body["limit"]) == (0, 500)
    assert body["features"] == [row(f) for f in expected]
    keys = [f[sort] for f in body["features"]]
    assert keys == sorted(keys, reverse=order == "desc")


def test_feature_list_default_is_max_act_desc_page_of_50(client, store):
    body = client.get(features_url()).json()
    assert (body["offset"], body["limit"], body["total"]) == (0, 50, 128)
    assert body["features"] == [row(f) for f in store.list_features(sort="max_act", descending=True)[1]]


def test_feature_list_filters_and_pagination(client, store):
    _, everything = store.list_features(sort="index", descending=False, limit=500)
    densities = sorted(f.density for f in everything if f.density > 0)
    lo, hi = densities[len(densities) // 4], densities[3 * len(densities) // 4]
    min_max_act = sorted(f.max_act for f in everything)[len(everything) // 3]
    params = {"sort": "density", "order": "asc", "min_density": lo, "max_density": hi, "min_max_act": min_max_act}
    expected = [row(f) for f in sorted(everything, key=lambda f: (f.density, f.index))
                if lo <= f.density <= hi and f.max_act >= min_max_act]
    assert len(expected) > 5

    pages, offset = [], 0
    while True:
        body = client.get(features_url(), params={**params, "offset": offset, "limit": 4}).json()
        assert body["total"] == len(expected) and body["offset"] == offset and body["limit"] == 4
        if not body["features"]:
            break
        assert len(body["features"]) <= 4
        pages += body["features"]
        offset += 4
    assert pages == expected
    assert client.get(features_url(), params={"offset": 10_000}).json()["features"] == []


@pytest.mark.parametrize("params, word", [
    ({"sort": "bogus"}, "sort"), ({"order": "up"}, "order"), ({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
    ({"offset": -1}, "offset"), ({"min_density": "abc"}, "min_density"), ({"min_max_act": "x"}, "min_max_act"),
    ({"min_density": "nan"}, "NaN"),
])
def test_feature_list_malformed_params_422(client, params, word):
    assert_error(client.get(features_url(), params=params), 422, word)


def test_feature_detail_matches_store(client, store):
    _, top = store.list_features(sort="max_act", descending=True, limit=3)
    for stats in top:
        r = client.get(f"{features_url()}/{stats.index}")
        assert r.status_code == 200
        body = r.json()
        assert body == json_ready(store.get_feature(stats.index))
        assert {"index", "act_count", "density", "max_act", "mean_act", "d_sae", "histogram", "logit_lens", "top",
                "intervals"} <= set(body)
        assert body["d_sae"] == 128 and body["act_count"] > 0
        assert len(body["histogram"]["edges"]) == len(body["histogram"]["counts"]) + 1
        assert body["top"], "an alive feature has top contexts"
        for sample in body["top"] + [s for g in body["intervals"] for s in g["samples"]]:
            assert len(sample["token_ids"]) == len(sample["tokens"]) == len(sample["acts"])
            assert sample["acts"][sample["max_pos"]] == pytest.approx(sample["max_act"], rel=1e-3, abs=1e-3)
        assert [s["max_act"] for s in body["top"]] == sorted((s["max_act"] for s in body["top"]), reverse=True)
        numbers = [int(g["name"].split("_")[1]) for g in body["intervals"]]
        assert numbers == sorted(numbers, reverse=True)  # highest interval first
        assert body["logit_lens"]["positive"] and body["logit_lens"]["note"] is None  # a residual hook


def test_random_feature_is_alive(client, store):
    seen = set()
    for _ in range(12):
        r = client.get(f"{features_url()}/random")
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["act_count"] > 0
        assert body == json_ready(store.get_feature(body["index"]))
        seen.add(body["index"])
    assert len(seen) > 1


def test_unknown_dictionary_analysis_feature_404(client):
    assert_error(client.get("/api/dictionaries/nope"), 404, "nope")
    assert_error(client.get(features_url("nope")), 404, "nope")
    assert_error(client.get(features_url(analysis="nope")), 404, "nope")
    assert_error(client.get(f"{features_url(analysis='nope')}/3"), 404, "nope")
    assert_error(client.get(f"{features_url()}/128"), 404, "0..127")
    # Never an index of any dictionary: malformed (422), not missing.
    assert_error(client.get(f"{features_url()}/-1"), 422, "'index'", "greater than or equal to 0")
    assert_error(client.get(f"{features_url()}/99999999999999999999999"), 422, "'index'", "less than or equal to")
    assert_error(client.get(f"{features_url()}/abc"), 422, "index")
    assert_error(client.post("/api/dictionaries/nope/activations", json={"text": "hi"}), 404, "nope")
    assert_error(client.get("/api/no-such-endpoint"), 404)


def test_openapi_documents_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ["/api/health", "/api/dictionaries", "/api/dictionaries/{name}",
                 "/api/dictionaries/{name}/analyses/{analysis}/features",
                 "/api/dictionaries/{name}/analyses/{analysis}/features/random",
                 "/api/dictionaries/{name}/analyses/{analysis}/features/{index}",
                 "/api/dictionaries/{name}/activations"]:
        assert path in paths, path
    assert {"FeatureRecord", "DictionaryDetail", "ActivationsResponse"} <= set(schema["components"]["schemas"])
    assert client.get("/docs").status_code == 200


def test_cors_allows_the_configured_origins_only(client):
    allowed = client.options(features_url(), headers={"Origin": "http://localhost:24576",
                                                      "Access-Control-Request-Method": "GET"})
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:24576"
    r = client.get("/api/health", headers={"Origin": "http://127.0.0.1:24576"})
    assert r.headers.get("access-control-allow-origin") == "http://127.0.0.1:24576"
    r = client.get("/api/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


# ----------------------------------------------------------------------------------------------
# Custom text


def test_activations_match_encode_text(client, tiny_model, tiny_dictionary, store):
    from core.analysis import encode_text
    from core.sae import load_dictionary

    feature = store.list_features(sort="act_count", descending=True, limit=1)[1][0].index
    r = client.post(f"/api/dictionaries/{DICT}/activations", json={"text": TEXT, "feature": feature, "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = encode_text(tiny_model, load_dictionary(tiny_dictionary), TEXT, max_tokens=MAX_TOKENS)
    dense = expected.acts.to_dense()  # the reference; the server reads the sparse rows directly
    assert body["token_ids"] == expected.token_ids
    assert body["tokens"] == expected.tokens
    assert "".join(body["tokens"]) == TEXT
    assert body["truncated"] is False
    n = len(body["tokens"])
    assert body["feature"]["index"] == feature
    assert len(body["feature"]["acts"]) == n  # one activation per token
    torch.testing.assert_close(torch.tensor(body["feature"]["acts"]), dense[:, feature], atol=1e-5, rtol=1e-5)
    assert len(body["top_features"]) == n
    for row, acts in zip(body["top_features"], dense):
        assert 0 < len(row) <= 3
        values = [f["act"] for f in row]
        assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
        ref_values, _ = acts.topk(len(row))
        torch.testing.assert_close(torch.tensor(values), ref_values, atol=1e-5, rtol=1e-5)
        for f in row:
            assert acts[f["index"]].item() == pytest.approx(f["act"], abs=1e-5)


def test_activations_without_feature_and_defaults(client):
    r = client.post(f"/api/dictionaries/{DICT}/activations", json={"text": "Hello world"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["feature"] is None and body["truncated"] is False
    assert body["token_ids"] == [15496, 995]  # GPT-2's ids: the real tokenizer
    assert body["tokens"] == ["Hello", " world"]
    assert all(len(row) <= 5 for row in body["top_features"])  # default top_k


def test_activations_truncated_at_token_limit(client):
    text = " ".join(["word"] * (MAX_TOKENS * 2))
    assert len(text) <= MAX_CHARS
    body = client.post(f"/api/dictionaries/{DICT}/activations", json={"text": text, "feature": 0}).json()
    assert body["truncated"] is True
    assert len(body["tokens"]) == len(body["feature"]["acts"]) == len(body["top_features"]) == MAX_TOKENS


def test_activations_text_too_long_413(client):
    detail = assert_error(client.post(f"/api/dictionaries/{DICT}/activations", json={"text": "a" * (MAX_CHARS + 1)}),
                          413)
    assert str(MAX_CHARS) in detail


@pytest.mark.parametrize("body, word", [
    ({}, "text"), ({"text": ""}, "text"), ({"text": "hi", "top_k": 0}, "top_k"), ({"text": "hi", "top_k": 21}, "top_k"),
    ({"text": "hi", "feature": "x"}, "feature"), ({"text": 5}, "text"), ({"text": "hi", "bogus": 1}, "bogus"),
])
def test_activations_malformed_body_422(client, body, word):
    assert_error(client.post(f"/api/dictionaries/{DICT}/activations", json=body), 422, word)


def test_activations_unknown_feature_404(client):
    assert_error(client.post(f"/api/dictionaries/{DICT}/activations", json={"text": "hi", "feature": 128}),
                 404, "0..127")


def test_model_cache_is_lru_and_shares_the_model(results_copy):
    shutil.copytree(dictionary_folder(results_copy), dictionary_folder(results_copy, "second"))
    second_id = f"second:{TINY_HOOK}"
    app = create_app(make_settings(results_copy, model_cache_size=1))
    with local_client(app) as c:
        for name in (DICT, second_id, DICT):
            assert c.post(f"/api/dictionaries/{name}/activations", json={"text": "Hello"}).status_code == 200
        assert [Path(k).parts[-3] for k in app.state.server.models.keys()] == [RUN]
    app = create_app(make_settings(results_copy, model_cache_size=2))
    with local_client(app) as c:
        first = c.post(f"/api/dictionaries/{DICT}/activations", json={"text": "Hello world"}).json()
        second = c.post(f"/api/dictionaries/{second_id}/activations", json={"text": "Hello world"}).json()
        assert first == second  # same weights
        pairs = list(app.state.server.models._pairs.values())
        assert len(pairs) == 2 and pairs[0].model is pairs[1].model and pairs[0].lock is pairs[1].lock


# ----------------------------------------------------------------------------------------------
# Safety and robustness


@pytest.mark.parametrize("path", [
    "/api/dictionaries/..", "/api/dictionaries/%2E%2E", "/api/dictionaries/%2E",
    "/api/dictionaries/..%2F..%2Fetc", "/api/dictionaries/%2Fetc%2Fpasswd", "/api/dictionaries/..%5C..",
    "/api/dictionaries/.hidden", f"/api/dictionaries/{DICT}/analyses/..%2F..%2F{DICT}/features",
    f"/api/dictionaries/{DICT}/analyses/%2E%2E/features", f"/api/dictionaries/%2E%2E/analyses/{DICT}/features",
    "/api/dictionaries/%00",
])
def test_traversal_names_are_refused(client, path):
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.text)
    assert "Traceback" not in r.text and "format_version" not in r.text


def test_symlinks_leading_outside_the_results_folder_are_refused(results_copy, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(results_copy / RUN, outside / "evil")
    (results_copy / "evil").symlink_to(outside / "evil", target_is_directory=True)  # a whole run
    evil = f"evil:{TINY_HOOK}"
    analyses = analyses_folder(results_copy)
    (analyses / "leak").symlink_to(analyses_folder(outside, "evil") / "default", target_is_directory=True)
    (analyses / "leak-file").mkdir()
    (analyses / "leak-file" / "features.sqlite").symlink_to(analyses_folder(outside, "evil") / "default" /
                                                            "features.sqlite")
    (results_copy / "alias").symlink_to(results_copy / RUN, target_is_directory=True)  # inside: allowed

    with local_client(create_app(make_settings(results_copy))) as c:
        names = [d["name"] for d in c.get("/api/dictionaries").json()["dictionaries"]]
        assert names == [f"alias:{TINY_HOOK}", DICT]
        assert_error(c.get(f"/api/dictionaries/{evil}"), 404, "outside the results folder")
        assert_error(c.get(features_url(evil)), 404, "outside the results folder")
        assert_error(c.get(f"{features_url(evil)}/0"), 404)
        assert_error(c.post(f"/api/dictionaries/{evil}/activations", json={"text": "hi"}), 404)
        for leak in ("leak", "leak-file"):
            assert_error(c.get(features_url(analysis=leak)), 404, "outside the results folder")
            assert_error(c.get(f"{features_url(analysis=leak)}/random"), 404)
        assert c.get(f"/api/dictionaries/{DICT}").json()["analyses"] == ["default"]
        assert c.get(f"{features_url(f'alias:{TINY_HOOK}')}/0").status_code == 200


def test_corrupt_store_gives_500_and_the_server_keeps_serving(results_copy):
    analyses = analyses_folder(results_copy)
    good = analyses / "default" / "features.sqlite"
    # 1. truncated: refused when opened
    (analyses / "truncated").mkdir()
    data = good.read_bytes()
    (analyses / "truncated" / "features.sqlite").write_bytes(data[: len(data) // 2])
    # 2. garbage over the pages after the first: opens, fails when a query reads them
    (analyses / "garbage").mkdir()
    page_size = int.from_bytes(data[16:18], "big")
    garbled = data[:page_size * 2] + bytes([0xA5]) * (len(data) - page_size * 2)
    (analyses / "garbage" / "features.sqlite").write_bytes(garbled)
    # 3. not a database at all
    (analyses / "text").mkdir()
    (analyses / "text" / "features.sqlite").write_text("not a database\n" * 20)

    with local_client(create_app(make_settings(results_copy))) as c:
        for name in ("truncated", "garbage", "text"):
            for url in (features_url(analysis=name), f"{features_url(analysis=name)}/1",
                        f"{features_url(analysis=name)}/random"):
                r = c.get(url)
                detail = assert_error(r, 500, name)
                assert "rerun" in detail or "not a feature store" in detail, detail
            # the server is still up and serves the good analysis
            assert c.get(f"{features_url()}/1").status_code == 200
            assert c.get(features_url()).json()["total"] == 128
        body = c.get(f"/api/dictionaries/{DICT}").json()
        assert body["analyses"] == ["default"]  # only complete, readable stores are listed
        assert [s["name"] for s in body["analysis_summaries"]] == ["default"]
        assert c.get("/api/health").json()["n_dictionaries"] == 1


def test_incomplete_analysis_is_not_listed_and_404(results_copy):
    running = analyses_folder(results_copy) / "running"
    running.mkdir()
    shutil.copy(analyses_folder(results_copy) / "default" / "features.sqlite", running / "features.sqlite.partial")
    with local_client(create_app(make_settings(results_copy))) as c:
        assert c.get(f"/api/dictionaries/{DICT}").json()["analyses"] == ["default"]
        assert_error(c.get(features_url(analysis="running")), 404, "not complete")


def test_damaged_dictionary_config(results_copy):
    for name, text in (("broken", "{not json"), ("no-model", '{"hook_name": "x", "architecture": "topk", "d_in": 64}'),
                       ("bad-width", None)):
        shutil.copytree(dictionary_folder(results_copy), dictionary_folder(results_copy, name))
        config_path = dictionary_folder(results_copy, name) / "config.json"
        if text is None:
            text = json.dumps({**json.loads(config_path.read_text()), "d_in": "sixty-four"})
        config_path.write_text(text)
    with local_client(create_app(make_settings(results_copy))) as c:
        assert [d["name"] for d in c.get("/api/dictionaries").json()["dictionaries"]] == [DICT]
        assert_error(c.get(f"/api/dictionaries/broken:{TINY_HOOK}"), 500, "config.json", "broken")
        assert_error(c.get(f"/api/dictionaries/no-model:{TINY_HOOK}"), 500, "model_name")
        assert_error(c.get(f"/api/dictionaries/bad-width:{TINY_HOOK}"), 500, "d_in")
        assert_error(c.post(f"/api/dictionaries/bad-width:{TINY_HOOK}/activations", json={"text": "hi"}), 500, "d_in")
        assert c.get(f"/api/dictionaries/{DICT}").status_code == 200


def test_model_that_cannot_be_loaded_gives_500(results_copy):
    config_path = dictionary_folder(results_copy) / "config.json"
    config = {k: v for k, v in json.loads(config_path.read_text()).items() if k != "model"}
    config_path.write_text(json.dumps({**config, "model_name": "/nonexistent/model"}))
    with local_client(create_app(make_settings(results_copy))) as c:
        assert_error(c.post(f"/api/dictionaries/{DICT}/activations", json={"text": "hi"}), 500,
                     "/nonexistent/model", "does not exist")
        assert c.get(f"{features_url()}/0").status_code == 200  # browsing needs no model


def test_unexpected_errors_do_not_leak_tracebacks(results_copy):
    app = create_app(make_settings(results_copy))

    @app.get("/api/test-crash")
    def crash():
        raise RuntimeError("secret internal detail")

    app.router.routes.insert(0, app.router.routes.pop())  # before the /api catch-all

    with local_client(app, raise_server_exceptions=False) as c:
        detail = assert_error(c.get("/api/test-crash"), 500, "Internal server error")
        assert "secret" not in detail
        assert c.get("/api/health").status_code == 200


def test_new_and_rerun_results_appear_without_restart(results_copy, tmp_path, tiny_model, tiny_gpt2_dir):
    from core.analysis import analyze
    from tests.conftest import tiny_analysis_config

    empty = tmp_path / "later"
    with local_client(create_app(make_settings(empty))) as c:
        assert c.get("/api/dictionaries").json() == {"dictionaries": []}
        assert c.get("/api/health").json()["n_dictionaries"] == 0
        shutil.copytree(results_copy / RUN, empty / RUN)
        assert [d["name"] for d in c.get("/api/dictionaries").json()["dictionaries"]] == [DICT]
        before = c.get(f"/api/dictionaries/{DICT}").json()["analysis_summaries"][0]
        assert c.get(f"{features_url()}/0").status_code == 200  # the store is now open and cached

        # a new analysis, and a rerun (overwrite) of the existing one with another token count
        dictionary = dictionary_folder(empty)
        analyze(tiny_analysis_config(dictionary, tiny_gpt2_dir, analysis_name="second",
                                     total_analyzing_tokens=2000), model=tiny_model)
        analyze(tiny_analysis_config(dictionary, tiny_gpt2_dir, overwrite=True, total_analyzing_tokens=2000),
                model=tiny_model)
        body = c.get(f"/api/dictionaries/{DICT}").json()
        assert body["analyses"] == ["default", "second"]
        after = body["analysis_summaries"][0]
        assert after["n_tokens"] != before["n_tokens"]
        with FeatureStore(analyses_folder(empty) / "default") as fresh:
            assert fresh.n_tokens == after["n_tokens"]
            assert c.get(f"{features_url()}/5").json() == json_ready(fresh.get_feature(5))
        assert c.get(f"{features_url(analysis='second')}/random").json()["act_count"] > 0


# ----------------------------------------------------------------------------------------------
# The built UI


def test_older_one_dictionary_runs_are_still_served(results_copy, store):
    """results/<run>/dictionary/ with results/<run>/analysis/<name>/, as runs wrote them before
    multi-dictionary training: listed as `<run>` beside today's `<run>:<dictionary>`."""
    old = results_copy / "old-run"
    shutil.copytree(dictionary_folder(results_copy), old / "dictionary", ignore=shutil.ignore_patterns("analysis"))
    shutil.copytree(analyses_folder(results_copy) / "default", old / "analysis" / "default")
    with local_client(create_app(make_settings(results_copy))) as c:
        listed = {d["name"]: d for d in c.get("/api/dictionaries").json()["dictionaries"]}
        assert sorted(listed) == ["old-run", DICT]
        assert listed["old-run"]["run"] == "old-run" and listed["old-run"]["analyses"] == ["default"]
        assert c.get(f"{features_url('old-run')}/3").json() == json_ready(store.get_feature(3))
        assert c.post("/api/dictionaries/old-run/activations", json={"text": "Hello"}).status_code == 200
        assert_error(c.get(f"/api/dictionaries/old-run:{TINY_HOOK}"), 404, "No dictionary named")


def test_ui_served_from_dist_with_client_side_routes(results_copy, tmp_path):
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><div id=root>viewer</div>")
    (dist / "assets" / "index-abc123.js").write_text("console.log('viewer')")
    (tmp_path / "secret.txt").write_text("do not serve")
    with local_client(create_app(make_settings(results_copy, ui_dist=dist))) as c:
        for path in ("/", "/index.html", f"/dictionaries/{DICT}", f"/dictionaries/{DICT}/default/features/3"):
            r = c.get(path)
            assert r.status_code == 200 and "viewer</div>" in r.text, path
            assert r.headers["content-type"].startswith("text/html")
        r = c.get("/assets/index-abc123.js")
        assert r.status_code == 200 and "console.log" in r.text
        assert "immutable" in r.headers["cache-control"]
        assert c.get("/assets/missing-xyz.js").status_code == 404
        for path in ("/..%2Fsecret.txt", "/assets/..%2F..%2Fsecret.txt", "/%2E%2E/secret.txt"):
            assert "do not serve" not in c.get(path).text
        # /api paths never fall back to the UI
        assert_error(c.get("/api/nope"), 404)
        assert c.get("/api/health").json()["status"] == "ok"
        assert c.get("/docs").status_code == 200


def test_ui_hint_when_not_built(client):
    r = client.get("/")
    assert r.status_code == 200
    assert "bun run build" in r.text and "/docs" in r.text
    assert client.get("/dictionaries/x").status_code == 404


# ----------------------------------------------------------------------------------------------
# Settings


def test_settings_from_environment_and_env_file(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("GPT2DICT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    defaults = Settings()
    assert defaults.results_dir == Path("results") and defaults.device == "cpu"
    assert defaults.max_text_chars == 4000 and defaults.max_text_tokens == 512 and defaults.model_cache_size == 1
    assert defaults.ui_dist == Path("ui/dist")
    assert defaults.cors_origin_list == ["http://localhost:24576", "http://127.0.0.1:24576"]

    (tmp_path / ".env").write_text("GPT2DICT_RESULTS_DIR=/data/results\nGPT2DICT_MAX_TEXT_CHARS=100\n")
    monkeypatch.setenv("GPT2DICT_MAX_TEXT_CHARS", "200")  # the environment wins over .env
    monkeypatch.setenv("GPT2DICT_CORS_ORIGINS", "http://a.example, http://b.example/")
    s = Settings()
    assert s.results_dir == Path("/data/results") and s.max_text_chars == 200
    assert s.cors_origin_list == ["http://a.example", "http://b.example"]

    monkeypatch.setenv("GPT2DICT_DEVICE", "gpu")
    with pytest.raises(ValueError, match="GPT2DICT_DEVICE"):
        Settings()


def test_env_example_documents_every_setting():
    text = (ROOT / "server" / ".env.example").read_text()
    for field in Settings.model_fields:
        assert f"GPT2DICT_{field.upper()}=" in text, field


# ----------------------------------------------------------------------------------------------
# A real server process


def test_real_uvicorn_process(analysis_dir, tiny_results_dir, store):
    import httpx

    with uvicorn_server(tiny_results_dir) as base:
        health = httpx.get(f"{base}/api/health", timeout=2)
        assert health.json() == {"status": "ok", "results_dir": str(tiny_results_dir), "n_dictionaries": 1}
        with httpx.Client(base_url=base, timeout=10) as http:
            assert [d["name"] for d in http.get("/api/dictionaries").json()["dictionaries"]] == [DICT]
            index = store.list_features(limit=1)[1][0].index
            assert http.get(f"{features_url()}/{index}").json() == json_ready(store.get_feature(index))
            assert http.get(f"{features_url()}/random").json()["act_count"] > 0
            assert http.get(features_url(), params={"limit": 7}).json()["limit"] == 7
            assert http.get(f"{features_url()}/999").status_code == 404
            assert "bun run build" in http.get("/").text
