"""Explanations in the viewer's server, against a real explanations file (the real explainer and scorers
through a real OpenAI-compatible HTTP server): the feature table's columns, sorting and filtering by
score, search by explanation, a feature's explanations, "explain this feature" as a job within the
inference slots, and reading while a run writes the file."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from core import Explanations
from core.autointerp.explanations import Explanation, ExplanationsWriter, now
from server.app import create_app
from tests.autointerp_helpers import MisbehavingServer, token_reader
from tests.server_helpers import DICT, EXPLAINED_FEATURES, assert_error, features_url, local_client, make_settings

ANALYSIS_URL = f"/api/dictionaries/{DICT}/analyses/default"


@pytest.fixture()
def explained(results_copy, tiny_explanations):
    """A private results folder whose tiny analysis has the explanations file."""
    from tests.server_helpers import analyses_folder

    shutil.copy(tiny_explanations, analyses_folder(results_copy) / "default" / "explanations.sqlite")
    return results_copy


@pytest.fixture()
def reader(explained):
    from tests.server_helpers import analyses_folder

    with Explanations(analyses_folder(explained) / "default") as r:
        yield r


@pytest.fixture()
def client(explained):
    with local_client(create_app(make_settings(explained))) as c:
        yield c


def _scores(reader: Explanations) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for s in reader.scores():
        if s.balanced_accuracy is not None:
            out.setdefault(s.feature_index, {})[s.scorer] = s.balanced_accuracy
    return out


def test_the_feature_table_has_the_explanation_and_its_scores(client, reader):
    body = client.get(features_url(), params={"sort": "index", "order": "asc", "limit": 500}).json()
    texts = {e.feature_index: e.explanation for e in reader.explanations(limit=1000) if e.status == "ok"}
    scores = _scores(reader)
    assert len(texts) == EXPLAINED_FEATURES and len(body["features"]) == body["total"] == 128
    for row in body["features"]:
        assert row["explanation"] == texts.get(row["index"])
        assert (row["detection"], row["fuzzing"]) == (scores.get(row["index"], {}).get("detection"),
                                                      scores.get(row["index"], {}).get("fuzzing"))
    summary = body["explanations"]
    assert (summary["set_id"], summary["explainer_model"], summary["n_explained"]) == (1, "token-reader", len(texts))
    means = {s.scorer: s.mean_balanced_accuracy for s in reader.summary()}
    assert summary["mean_balanced_accuracy"] == pytest.approx(means)
    assert {s: n for s, n in summary["n_scored"].items()} == {s.scorer: s.n_features for s in reader.summary()}
    detail = client.get(f"/api/dictionaries/{DICT}").json()
    assert detail["analysis_summaries"][0]["explanations"] == summary


def test_sorting_and_filtering_by_score(client, reader):
    scores = _scores(reader)
    for order in ("desc", "asc"):
        body = client.get(features_url(), params={"sort": "detection", "order": order, "limit": 500}).json()
        scored = [f for f, s in scores.items() if "detection" in s]
        assert body["total"] == len(scored) and len({s["detection"] for s in scores.values() if "detection" in s}) > 1
        sign = -1 if order == "desc" else 1
        assert [r["index"] for r in body["features"]] == sorted(scored, key=lambda f: (sign * scores[f]["detection"], f))
    page = client.get(features_url(), params={"sort": "fuzzing", "offset": 5, "limit": 5}).json()
    best = sorted((f for f, s in scores.items() if "fuzzing" in s), key=lambda f: (-scores[f]["fuzzing"], f))
    assert [r["index"] for r in page["features"]] == best[5:10]
    threshold = sorted(s["fuzzing"] for s in scores.values() if "fuzzing" in s)[len(scores) // 2]
    kept = client.get(features_url(), params={"min_fuzzing": threshold, "sort": "max_act", "limit": 500}).json()
    assert kept["total"] == sum(s.get("fuzzing", -1) >= threshold for s in scores.values()) == len(kept["features"])
    maxes = [r["max_act"] for r in kept["features"]]
    assert maxes == sorted(maxes, reverse=True)  # filtered by score, still sorted by max_act
    assert_error(client.get(features_url(), params={"min_detection": 1.5}), 422, "min_detection")
    assert_error(client.get(features_url(), params={"sort": "explanation"}), 422, "sort")


def test_search_by_explanation(client, reader):
    word = reader.explanations(limit=1)[0].explanation.split('"')[1].strip() or "token"
    body = client.get(f"{ANALYSIS_URL}/search/explanations", params={"q": word}).json()
    expected = reader.search(word, limit=30)
    assert [m["index"] for m in body["matches"]] == [m.feature_index for m in expected] and expected
    assert all("[" in m["highlighted"] and m["max_act"] > 0 for m in body["matches"])
    assert_error(client.get(f"{ANALYSIS_URL}/search/explanations", params={"q": "!!!"}), 422, "no words")
    assert_error(client.get(f"{ANALYSIS_URL}/search/explanations", params={"q": "x" * 201}), 422, "q")
    assert_error(client.get(f"/api/dictionaries/{DICT}/analyses/nope/search/explanations", params={"q": "a"}), 404,
                 "nope")


def test_a_features_explanations_with_scores(client, reader):
    feature = reader.explanations(limit=1)[0].feature_index
    body = client.get(f"{ANALYSIS_URL}/features/{feature}/explanations").json()
    (shown,) = body["explanations"]
    assert shown["default"] and shown["explanation"] == reader.explanation(feature).explanation
    assert shown["scorer_model"] == "token-reader" and shown["n_held_out"] > 0
    assert {s["scorer"]: s["balanced_accuracy"] for s in shown["scores"]} == _scores(reader)[feature]
    assert body["explainer"] == {"backend": "local", "model": "SmolLM2-135M-Instruct", "scores": True}
    unexplained = next(i for i in range(128) if reader.explanation(i) is None)
    assert client.get(f"{ANALYSIS_URL}/features/{unexplained}/explanations").json()["explanations"] == []
    assert_error(client.get(f"{ANALYSIS_URL}/features/128/explanations"), 404, "0..127")


def test_explain_a_feature_as_a_job(explained, reader, tiny_analysis):
    from core import FeatureStore

    with FeatureStore(tiny_analysis) as store:
        alive = [s.index for s in store.list_features(sort="index", descending=False, limit=128)[1] if s.act_count]
        dead = next((s.index for s in store.list_features(sort="index", descending=False, limit=128)[1]
                     if not s.act_count), None)
    feature = next(f for f in alive if reader.explanation(f) is None)
    server = MisbehavingServer(token_reader)
    settings = make_settings(explained, explain_backend="openai", explain_base_url=server.base_url,
                             explain_model="token-reader", explain_probabilities="none")
    try:
        with local_client(create_app(settings)) as client:
            started = client.post(f"{ANALYSIS_URL}/features/{feature}/explain")
            assert started.status_code == 202, started.text
            job = started.json()
            assert (job["kind"], job["feature"], job["analysis"], job["steps"]) == ("explain", feature, "default", 4)
            deadline = time.monotonic() + 120
            while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
                time.sleep(0.2)
                job = client.get(f"/api/jobs/{job['id']}").json()
            assert job["status"] == "done", job
            assert job["result"]["explained"] and job["result"]["scorers"] == ["detection", "fuzzing"]
            body = client.get(f"{ANALYSIS_URL}/features/{feature}/explanations").json()
            (new,) = body["explanations"]
            assert new["explanation"].startswith("The token") and {s["scorer"] for s in new["scores"]} == {
                "detection", "fuzzing"}
            assert new["explainer_model"] == "token-reader" and body["explainer"]["backend"] == "openai"
            # every slot busy: a new job is turned away at once, with Retry-After
            state = client.app.state.server
            assert state.inference_slots.acquire(blocking=False)
            try:
                busy = client.post(f"{ANALYSIS_URL}/features/{alive[-1]}/explain")
                assert_error(busy, 503, "slots")
                assert busy.headers["retry-after"]
            finally:
                state.inference_slots.release()
            if dead is not None:
                assert_error(client.post(f"{ANALYSIS_URL}/features/{dead}/explain"), 422, "never fired")
            assert_error(client.get("/api/jobs/nope"), 404, "nope")
    finally:
        server.close()


def test_the_file_is_read_while_a_run_writes_it(client, explained):
    """A writer adds explanations step by step (each a transaction) while the table, search and a feature's
    explanations are read: every answer is whole and the counts only grow."""
    from tests.server_helpers import analyses_folder

    folder = analyses_folder(explained) / "default"
    stop = threading.Event()
    written = []

    def write():
        with ExplanationsWriter(folder) as writer:
            set_id = writer.explanation_set({"run": "concurrent"}, explainer_model="writer", prompt_version=1)
            for step in range(25):
                rows = [Explanation(set_id, f, "ok", f"concurrent words step {step}", "raw", [], [], [], 1, 1, now())
                        for f in range(step * 5, step * 5 + 5)]
                writer.write_explanations(rows)
                written.append(step)
                time.sleep(0.01)
        stop.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = []
    try:
        while not stop.is_set() or not seen:
            table = client.get(features_url(), params={"limit": 5})
            search = client.get(f"{ANALYSIS_URL}/search/explanations", params={"q": "concurrent"})
            feature = client.get(f"{ANALYSIS_URL}/features/0/explanations")
            assert table.status_code == search.status_code == feature.status_code == 200
            summary = table.json()["explanations"]
            seen.append((summary["set_id"], summary["n_explained"]))
    finally:
        thread.join()
    # the new set becomes the default with its first step; from then on its count only grows
    assert seen == sorted(seen) and seen[-1] == (2, 125) and len(written) == 25
    assert len(client.get(f"{ANALYSIS_URL}/search/explanations", params={"q": "concurrent", "limit": 200})
               .json()["matches"]) == 125


def test_a_replaced_file_is_read_afresh(client, explained):
    from tests.server_helpers import analyses_folder

    path = analyses_folder(explained) / "default" / "explanations.sqlite"
    assert client.get(features_url()).json()["explanations"] is not None
    path.rename(path.with_name("moved.sqlite"))
    assert client.get(features_url()).json()["explanations"] is None  # gone: no explanations, no error
    path.with_name("moved.sqlite").rename(path)
    assert client.get(features_url()).json()["explanations"]["n_explained"] == EXPLAINED_FEATURES
