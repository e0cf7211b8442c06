"""The server under bad input and load: body cap, inference slots (503), model loading (per-dictionary,
failures remembered), out-of-range parameters, the dictionary's own model config, the Host check.

Against the real app (TestClient) or a real uvicorn process, the tiny GPT-2, and a deep variant of
it (96 blocks, read at its last block) whose load and inference are slow for real.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from server.app import create_app
from server.inference import model_config_of
from tests.server_helpers import (DICT, assert_error, dictionary_folder, features_url, free_port,
                                  local_client, make_settings, raw_http, request_bytes, server_process,
                                  uvicorn_server)
from tests.conftest import TINY_HOOK
from tests.tiny_gpt2 import build_tiny_gpt2

DEEP_LAYERS = 96
LONG_TEXT = " ".join(["word"] * 250)


def activations_url(name: str = DICT) -> str:
    return f"/api/dictionaries/{name}/activations"


def edit_config(dictionary: Path, **changes) -> None:
    """Change config.json's keys; a new model_name drops the trainer's "model" key (which would win)."""
    path = dictionary / "config.json"
    config = json.loads(path.read_text())
    if "model_name" in changes and "model" not in changes:
        config.pop("model", None)
    path.write_text(json.dumps({**config, **changes}))


def copy_dictionary(results: Path, run: str, **changes) -> str:
    """A copy of the tiny dictionary in run `run` of `results`, its config.json edited; returns its id."""
    folder = dictionary_folder(results, run)
    shutil.copytree(dictionary_folder(results), folder)
    edit_config(folder, **changes)
    return f"{run}:{TINY_HOOK}"


@pytest.fixture(scope="module")
def deep_gpt2_dir(tmp_path_factory) -> Path:
    """A 96-block tiny GPT-2: a few seconds to load, ~150 ms to read 200 tokens at its last block."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("deep-gpt2") / "model", n_layer=DEEP_LAYERS, seed=1)


DEEP = f"deep:{TINY_HOOK}"


def add_deep_dictionary(results: Path, deep_gpt2_dir: Path) -> str:
    """The tiny dictionary's weights read at the deep model's last block (d_model is the same), as `DEEP`."""
    return copy_dictionary(results, "deep", model_name=str(deep_gpt2_dir),
                           hook_name=f"blocks.{DEEP_LAYERS - 1}.hook_resid_post")


# ----------------------------------------------------------------------------------------------
# 10. The body is capped before it is parsed


def test_body_over_the_cap_is_413_by_content_length(results_copy):
    with local_client(create_app(make_settings(results_copy, max_body_bytes=2000))) as c:
        body = json.dumps({"text": "x" * 1990}).encode()
        assert len(body) > 2000
        assert_error(c.post(activations_url(), content=body, headers={"content-type": "application/json"}),
                     413, str(len(body)), "2000", "GPT2DICT_MAX_BODY_BYTES")
        # under the cap, the body reaches the endpoint (whose own text limit then speaks)
        assert_error(c.post(activations_url(), json={"text": "x" * 1500}), 413, "GPT2DICT_MAX_TEXT_CHARS")
        assert c.post(activations_url(), json={"text": "Hello"}).status_code == 200


def test_body_cap_on_a_real_server_with_and_without_content_length(results_copy):
    limit = 4096
    with uvicorn_server(results_copy, {"GPT2DICT_MAX_BODY_BYTES": str(limit)}) as base:
        # Content-Length over the cap: answered from the headers alone, the body is never sent.
        r = raw_http(base, request_bytes("POST", activations_url(), headers={
            "Content-Type": "application/json", "Content-Length": "10000000"}))
        assert r.status == 413 and "10000000" in r.json()["detail"] and str(limit) in r.json()["detail"]

        # Chunked, no Content-Length: refused as soon as the chunks pass the cap (the rest never comes).
        head = request_bytes("POST", activations_url(), headers={
            "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        chunks = b"".join(b"%x\r\n%s\r\n" % (n, b"x" * n) for n in (limit - 10, 100))
        r = raw_http(base, head + chunks)
        assert r.status == 413, r
        assert f"more than {limit}" in r.json()["detail"] and "GPT2DICT_MAX_BODY_BYTES" in r.json()["detail"]

        # A chunked body under the cap is served as usual.
        body = json.dumps({"text": "Hello world"}).encode()
        ok = httpx.post(f"{base}{activations_url()}", content=iter([body[:5], body[5:]]),
                        headers={"content-type": "application/json"}, timeout=120)  # loads the model
        assert "content-length" not in ok.request.headers and ok.status_code == 200, ok.text
        assert ok.json()["tokens"] == ["Hello", " world"]
        assert httpx.get(f"{base}/api/health").status_code == 200


# ----------------------------------------------------------------------------------------------
# 11. Inference slots, and loading that never blocks other dictionaries


def test_busy_inference_answers_503_with_retry_after_at_once(results_copy, deep_gpt2_dir):
    add_deep_dictionary(results_copy, deep_gpt2_dir)
    settings = {"GPT2DICT_INFERENCE_CONCURRENCY": "1", "GPT2DICT_MAX_TEXT_TOKENS": "200",
                "GPT2DICT_MAX_TEXT_CHARS": "2000"}
    with uvicorn_server(results_copy, settings) as base:
        assert httpx.post(f"{base}{activations_url(DEEP)}", json={"text": "warm up"}, timeout=120).status_code == 200
        n = 6
        start = threading.Barrier(n + 1)
        answers: list[tuple[float, httpx.Response]] = []

        def post():
            with httpx.Client(base_url=base, timeout=60) as http:
                start.wait()
                r = http.post(activations_url(DEEP), json={"text": LONG_TEXT})
                answers.append((time.monotonic(), r))

        def browse():
            with httpx.Client(base_url=base, timeout=60) as http:
                start.wait()
                answers.append((time.monotonic(), http.get(f"{features_url()}/3")))

        threads = [threading.Thread(target=post) for _ in range(n - 1)] + [threading.Thread(target=browse)]
        for t in threads:
            t.start()
        start.wait()
        for t in threads:
            t.join()
        answers.sort(key=lambda a: a[0])
        statuses = [r.status_code for _, r in answers]
        assert set(statuses) <= {200, 503} and 503 in statuses and statuses.count(200) >= 2, statuses
        for _, r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert_error(r, 503, "GPT2DICT_INFERENCE_CONCURRENCY", "retry")
        # Turned away, not queued: a 503 comes back before the slot's computation is done.
        first_inference = next(i for i, (_, r) in enumerate(answers) if r.status_code == 200 and "tokens" in r.json())
        assert 503 in statuses[:first_inference], statuses
        assert httpx.post(f"{base}{activations_url(DEEP)}", json={"text": "again"}, timeout=60).status_code == 200


def test_a_cold_load_does_not_block_another_dictionary(results_copy, deep_gpt2_dir):
    add_deep_dictionary(results_copy, deep_gpt2_dir)
    with uvicorn_server(results_copy, {"GPT2DICT_MODEL_CACHE_SIZE": "2"}) as base, \
            httpx.Client(base_url=base, timeout=120) as http:
        assert http.post(activations_url(), json={"text": "Hello"}).status_code == 200  # DICT is loaded
        # Two requests for the cold deep dictionary: one loads it (seconds), the other is told so at once.
        answers: queue.Queue[httpx.Response] = queue.Queue()
        cold = [threading.Thread(target=lambda: answers.put(httpx.post(
            f"{base}{activations_url(DEEP)}", json={"text": "Hello"}, timeout=120))) for _ in range(2)]
        for t in cold:
            t.start()
        try:
            loading = answers.get(timeout=60)
            assert_error(loading, 503, f"'{DEEP}'", "being loaded")
            assert loading.headers["retry-after"] == "5"
            # While it loads: the loaded dictionary computes, and browsing answers.
            assert http.post(activations_url(), json={"text": "Hello world"}).json()["tokens"] == ["Hello", " world"]
            assert http.get(f"{features_url()}/0").status_code == 200
            still = http.post(activations_url(DEEP), json={"text": "Hello"})
            assert still.status_code == 503, "the deep model finished loading before the other dictionary answered"
        finally:
            for t in cold:
                t.join()
        loaded = answers.get(timeout=1)
        assert loaded.status_code == 200, loaded.text
        assert http.post(activations_url(DEEP), json={"text": "Hello"}).status_code == 200


def test_two_dictionaries_of_one_model_load_it_once(results_copy):
    twin = copy_dictionary(results_copy, "twin")
    app = create_app(make_settings(results_copy, model_cache_size=2))
    results, models = app.state.server.results, app.state.server.models
    infos = [results.dictionary(DICT), results.dictionary(twin)]
    start = threading.Barrier(2)
    pairs = {}

    def load(info):
        start.wait()
        pairs[info.name] = models.get(info)

    threads = [threading.Thread(target=load, args=(info,)) for info in infos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pairs[DICT].model is pairs[twin].model and pairs[DICT].sae is not pairs[twin].sae


def test_a_failed_model_load_is_remembered_for_its_ttl(results_copy, tiny_gpt2_dir):
    ttl_s = 5.0  # long enough for a copy and a request on a loaded CI machine
    # A relative model folder is looked up in the results folder, where it is missing at first.
    edit_config(dictionary_folder(results_copy), model_name="./models/tiny-gpt2")
    with local_client(create_app(make_settings(results_copy, model_load_failure_ttl_s=ttl_s))) as c:
        first = assert_error(c.post(activations_url(), json={"text": "Hello"}), 500,
                             str(results_copy / "models" / "tiny-gpt2"), "does not exist",
                             "GPT2DICT_MODEL_LOAD_FAILURE_TTL_S")
        failed_at = time.monotonic()
        shutil.copytree(tiny_gpt2_dir, results_copy / "models" / "tiny-gpt2")  # fixed: loadable now
        again = c.post(activations_url(), json={"text": "Hello"})
        assert time.monotonic() - failed_at < ttl_s  # else the check below proves nothing
        assert assert_error(again, 500) == first  # the remembered answer, no new load
        assert c.get(f"{features_url()}/0").status_code == 200  # browsing needs no model
        time.sleep(max(0.0, failed_at + ttl_s + 0.05 - time.monotonic()))
        assert c.post(activations_url(), json={"text": "Hello"}).json()["tokens"] == ["Hello"]


def test_saving_the_dictionary_again_retries_its_load_at_once(results_copy, tiny_gpt2_dir):
    dictionary = dictionary_folder(results_copy)
    edit_config(dictionary, model_name="/nonexistent/model")
    with local_client(create_app(make_settings(results_copy, model_load_failure_ttl_s=3600))) as c:
        assert_error(c.post(activations_url(), json={"text": "Hi"}), 500, "/nonexistent/model")
        edit_config(dictionary, model_name=str(tiny_gpt2_dir))
        assert c.post(activations_url(), json={"text": "Hi"}).status_code == 200


# ----------------------------------------------------------------------------------------------
# 12. Sparse rows all the way (the comparison with dense activations is in test_server / test_analysis)


@pytest.fixture(scope="module")
def client_tiny(analysis_dir, tiny_results_dir):
    with local_client(create_app(make_settings(tiny_results_dir))) as c:
        yield c


def test_top_features_list_at_most_the_dictionarys_k(client_tiny):
    r = client_tiny.post(activations_url(), json={"text": "Hello world", "feature": 127, "top_k": 20})
    assert r.status_code == 200
    body = r.json()
    assert len(body["feature"]["acts"]) == 2 and all(a >= 0 for a in body["feature"]["acts"])
    assert all(0 < len(row) <= 8 for row in body["top_features"])  # a top-k dictionary, k = 8: 8 entries a row


# ----------------------------------------------------------------------------------------------
# 13. Out-of-range parameters are 422, never 500

HUGE = "1" + "0" * 30


@pytest.mark.parametrize("params, word", [
    ({"offset": HUGE}, "offset"), ({"offset": str(2**63)}, "offset"), ({"offset": "-5"}, "offset"),
    ({"limit": HUGE}, "limit"), ({"limit": "-1"}, "limit"), ({"limit": "1.5"}, "limit"),
    ({"min_density": "inf"}, "min_density"), ({"max_density": "-inf"}, "max_density"),
    ({"min_max_act": "1e400"}, "min_max_act"), ({"min_max_act": "NaN"}, "min_max_act"),
    ({"min_density": "Infinity"}, "finite"), ({"sort": "index; DROP TABLE features"}, "sort"),
])
def test_out_of_range_query_parameters_are_422(client_tiny, params, word):
    assert_error(client_tiny.get(features_url(), params=params), 422, word)


@pytest.mark.parametrize("index", ["-1", "-" + HUGE, HUGE, str(2**63), "1e3", "0x10", "nan", "%F0%9F%98%80"])
def test_out_of_range_feature_index_is_422(client_tiny, index):
    assert_error(client_tiny.get(f"{features_url()}/{index}"), 422, "'index'")


@pytest.mark.parametrize("body, word", [
    ({"text": "hi", "feature": -1}, "feature"), ({"text": "hi", "feature": 10**30}, "feature"),
    ({"text": "hi", "feature": 1.5}, "feature"), ({"text": "hi", "top_k": 0}, "top_k"),
    ({"text": "hi", "top_k": 10**30}, "top_k"), ({"text": ""}, "text"), ({"text": 5}, "text"),
    ({"text": "hi", "extra": 1}, "extra"), ({}, "text"),
])
def test_out_of_range_body_fields_are_422(client_tiny, body, word):
    assert_error(client_tiny.post(activations_url(), json=body), 422, word)


@pytest.mark.parametrize("content, content_type, words", [
    (b'{"text": "hi", "top_k": NaN}', "application/json", ("top_k", "finite")),
    (b'{"text": "\xff\xfe"}', "application/json", ("not UTF-8",)),
    (b'{"text": "hi", "feature": ' + b"9" * 5000 + b"}", "application/json", ("digits",)),
    (b'{"text": ' + b"[" * 20000 + b"]" * 20000 + b"}", "application/json", ("nested too deeply",)),
    (b'{"text": "hi"', "application/json", ("not valid JSON", "character")),
    (b'{"text": "hi"}', "text/plain", ("Content-Type: application/json",)),
    (b"text=hi", "application/x-www-form-urlencoded", ("JSON object",)),
    (b"[1, 2]", "application/json", ("JSON object",)),
])
def test_undecodable_bodies_are_422_with_what_to_send(client_tiny, content, content_type, words):
    assert_error(client_tiny.post(activations_url(), content=content, headers={"content-type": content_type}),
                 422, *words)


def test_the_largest_offset_is_an_empty_page(client_tiny):
    body = client_tiny.get(features_url(), params={"offset": 2**63 - 1}).json()
    assert body["features"] == [] and body["total"] == 128 and body["offset"] == 2**63 - 1


# ----------------------------------------------------------------------------------------------
# 14. The model config the dictionary was trained with


def test_model_config_of_a_dictionary(tmp_path):
    results = tmp_path / "results"
    old = model_config_of({"model_name": "gpt2"}, results)
    assert (old.name, old.dtype) == ("gpt2", "float32")  # older dictionaries: LanguageModelConfig(name=...)
    assert old.cache_dir == str(Path("~/.cache/gpt2_dictionary").expanduser())
    (results / "models" / "m").mkdir(parents=True)
    new = model_config_of({"model_name": "ignored", "model": {"name": "models/m", "cache_dir": "cache",
                                                              "dtype": "bfloat16"}}, results)
    assert (new.name, new.cache_dir, new.dtype) == (str(results / "models" / "m"), str(results / "cache"), "bfloat16")
    assert model_config_of({"model_name": "./missing"}, results).name == str(results / "missing")
    assert model_config_of({"model_name": "/abs/model"}, results).name == "/abs/model"
    assert model_config_of({"model_name": "SmolLM2-135M-Instruct"}, results).name == "SmolLM2-135M-Instruct"


def test_dictionary_model_config_is_used_for_inference(results_copy, tiny_gpt2_dir):
    shutil.copytree(tiny_gpt2_dir, results_copy / "models" / "tiny")  # relative to the results folder
    edit_config(dictionary_folder(results_copy),
                model={"name": "models/tiny", "cache_dir": "cache", "dtype": "bfloat16"})
    app = create_app(make_settings(results_copy))
    with local_client(app) as c:
        r = c.post(activations_url(), json={"text": "Hello world"})
        assert r.status_code == 200 and r.json()["tokens"] == ["Hello", " world"]
        (pair,) = app.state.server.models._pairs.values()
        assert pair.model.name == str(results_copy / "models" / "tiny")
        assert {p.dtype for p in pair.model.bridge.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("model, words", [
    ({"name": "models/tiny", "dtype": "float8"}, ("model.dtype", "float8")),
    ({"name": "models/tiny", "revision": "main"}, ("revision",)),
    ({"name": 5}, ("name", "not a string")),
    ("gpt2", ("LanguageModelConfig", "JSON object")),
])
def test_a_bad_model_config_is_a_clear_500(results_copy, model, words):
    edit_config(dictionary_folder(results_copy), model=model)
    with local_client(create_app(make_settings(results_copy))) as c:
        assert_error(c.post(activations_url(), json={"text": "Hi"}), 500, f"'{DICT}'", *words)
        assert c.get(f"{features_url()}/0").status_code == 200


def test_a_relative_model_path_never_resolves_against_the_working_directory(results_copy, tiny_gpt2_dir, tmp_path,
                                                                             monkeypatch):
    edit_config(dictionary_folder(results_copy), model_name="models/tiny")
    elsewhere = tmp_path / "cwd"
    shutil.copytree(tiny_gpt2_dir, elsewhere / "models" / "tiny")
    monkeypatch.chdir(elsewhere)  # found here, but the server does not look here
    with local_client(create_app(make_settings(results_copy))) as c:
        assert_error(c.post(activations_url(), json={"text": "Hi"}), 500, "relative path",
                     str(results_copy / "models" / "tiny"))


# ----------------------------------------------------------------------------------------------
# 15. Host header check against DNS rebinding


@pytest.mark.parametrize("host", ["localhost", "localhost:24577", "LOCALHOST.:8000", "127.0.0.1", "127.0.0.1:1",
                                  "[::1]:24577", "[::1]", "192.168.1.20:24577", "10.0.0.7"])
def test_local_and_ip_hosts_are_served(client_tiny, host):
    assert client_tiny.get("/api/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:24577", "localhost.evil.example",
                                  "127.0.0.1.nip.io:24577", "testserver", "[::1]evil", "localhost:24577@evil"])
def test_other_hosts_are_refused(client_tiny, host):
    detail = assert_error(client_tiny.get("/api/health", headers={"host": host}), 400, "GPT2DICT_ALLOWED_HOSTS",
                          "DNS rebinding")
    assert host.lower() in detail.lower()
    assert client_tiny.get(features_url(), headers={"host": host}).status_code == 400


def test_allowed_hosts_setting(results_copy):
    with local_client(create_app(make_settings(results_copy, allowed_hosts="viewer.lab, Proxy.Example."))) as c:
        for host in ("viewer.lab", "viewer.lab:8080", "proxy.example:443", "localhost:1", "127.0.0.1"):
            assert c.get("/api/health", headers={"host": host}).status_code == 200, host
        assert_error(c.get("/api/health", headers={"host": "other.lab"}), 400, "other.lab")
    with local_client(create_app(make_settings(results_copy, allowed_hosts="*"))) as c:
        assert c.get("/api/health", headers={"host": "anything.example"}).status_code == 200
    with pytest.raises(ValueError, match="GPT2DICT_ALLOWED_HOSTS has 'http://viewer.lab/'"):
        make_settings(results_copy, allowed_hosts="viewer.lab, http://viewer.lab/")


def test_host_check_on_a_real_server(results_copy):
    with uvicorn_server(results_copy) as base:
        assert raw_http(base, request_bytes("GET", "/api/health", host="attacker.example:80")).status == 400
        no_host = raw_http(base, b"GET /api/health HTTP/1.0\r\n\r\n")
        assert no_host.status == 400 and "missing" in no_host.json()["detail"]
        assert raw_http(base, request_bytes("GET", "/api/health", host=base.split("//")[1])).status == 200
        assert raw_http(base, request_bytes("GET", "/api/health", host="localhost")).status == 200


def test_python_m_server_on_all_interfaces(results_copy, tmp_path):
    port, log = free_port(), tmp_path / "server.log"
    command = ["-m", "server", "--host", "0.0.0.0", "--port", str(port), "--no-build"]
    with server_process(command, f"http://127.0.0.1:{port}", results_copy, log=log) as base:
        assert raw_http(base, request_bytes("GET", "/api/health", host=f"192.0.2.1:{port}")).status == 200  # by IP
        refused = raw_http(base, request_bytes("GET", "/api/health", host=f"myhost.lan:{port}"))
        assert refused.status == 400 and "GPT2DICT_ALLOWED_HOSTS" in refused.json()["detail"]
        printed = log.read_text()
        assert f"http://127.0.0.1:{port}" in printed and "anyone who can reach" in printed
