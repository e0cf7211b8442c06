"""Auto-interpretation: explaining, scoring, storage, both backends, faults and resumption.

Everything runs on a real analysis (the real analyzer over the tiny GPT-2 and the built-in corpus) of
a dictionary whose features follow known rules (`tests/autointerp_helpers.py`), with the real offline
SmolLM2-135M-Instruct as the local explainer and scorer, a real `transformers serve` process, and a real
HTTP server of this test that misbehaves on purpose (or answers by the known rules).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from core import (BackendConfig, BackendError, ExplainConfig, Explanations, FeatureStore, ScoreConfig,
                  explain_features, score_explanations)
from core.autointerp import LocalBackend, auroc, classification_metrics
from core.autointerp.explanations import ExplanationsWriter
from core.autointerp.prompts import (detection_prompt, explainer_prompt, fuzzing_prompt, parse_explanation,
                                     parse_yes_no, render_context)
from core.autointerp.samples import feature_groups
from core.autointerp.scoring import firing_features
from core.config import OFFLINE_MODEL_NAME, LanguageModelConfig
from core.lm import load_language_model, resolve_model_source
from core.sae import load_dictionary
from tests.autointerp_helpers import (RULE_EXPLANATIONS, RULE_TOKENS, MisbehavingServer, build_rule_dictionary,
                                      chat_answer, copy_dictionary)
from tests.conftest import all_at_once, tiny_analysis_config

ROOT = Path(__file__).resolve().parents[1]
EXPLAIN = ExplainConfig(n_top_shown=3, n_interval_shown=2, context_left=6, context_right=2, max_new_tokens=10,
                        features_per_step=4)
SCORE = ScoreConfig(n_activating=2, n_random_negatives=1, n_hard_negatives=1, features_per_step=4)


@pytest.fixture(scope="module")
def rule_dictionary(tiny_gpt2_dir, tiny_model, tmp_path_factory) -> Path:
    """The rule dictionary with its analysis "default" (3,000 tokens; 4 top + 2 x 2 interval contexts)."""
    from core import analyze

    folder = build_rule_dictionary(tiny_gpt2_dir, tmp_path_factory.mktemp("rules") / "run" / "dictionaries" / "rules")
    analyze(tiny_analysis_config(folder, tiny_gpt2_dir, total_analyzing_tokens=3000, top_k=4, n_intervals=2,
                                 samples_per_interval=2), model=tiny_model)
    return folder


@pytest.fixture
def analysis(rule_dictionary, tmp_path) -> Path:
    """A private copy of the rule dictionary's analysis folder."""
    return copy_dictionary(rule_dictionary, tmp_path) / "analysis" / "default"


@pytest.fixture(scope="module")
def local_backend():
    with LocalBackend(BackendConfig(batch_size=8)) as backend:
        yield backend


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# Arithmetic and parsing


def test_metrics_follow_delphis_definitions():
    labels = [True, True, True, False, False, False, False, True]
    predictions = [True, False, True, True, False, False, None, None]
    m = classification_metrics(labels, predictions, [0.9, 0.2, 0.8, 0.7, 0.1, 0.3, 0.5, None])
    # answered: TP 2, FN 1, FP 1, TN 2; the two unanswered are left out
    assert (m.n_items, m.n_failed, m.n_positive, m.n_negative) == (8, 2, 3, 3)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3) and m.f1 == pytest.approx(2 / 3)
    # AUROC over the 7 items with a probability = the share of (positive, negative) pairs ranked right
    scored = [(y, p) for y, p in zip(labels, [0.9, 0.2, 0.8, 0.7, 0.1, 0.3, 0.5, None]) if p is not None]
    pairs = [(a, b) for ya, a in scored for yb, b in scored if ya and not yb]
    assert m.auroc == pytest.approx(sum((a > b) + 0.5 * (a == b) for a, b in pairs) / len(pairs))
    assert auroc([True, False, True, False], [0.5, 0.5, 0.5, 0.5]) == 0.5  # ties count half
    assert auroc([True, True], [0.1, 0.2]) is None  # one class only
    nothing = classification_metrics([True, False], [None, None], [None, None])
    assert nothing.balanced_accuracy is None and nothing.n_failed == 2 and nothing.auroc is None
    one_class = classification_metrics([True, True], [True, False])
    assert one_class.balanced_accuracy == 0.25 and one_class.precision == 1.0  # delphi: a missing class adds 0


def test_first_writers_of_a_new_explanations_file_all_get_in(tmp_path):
    """Eight explainer runs start at once on an analysis with no explanations file yet, sixty times
    over: every one opens the file (the first turns it to WAL mode) and writes its set."""
    def first_write(analysis: Path, worker: int) -> None:
        with ExplanationsWriter(analysis) as writer:
            writer.explanation_set({"name": f"run {worker}"}, explainer_model="hand", prompt_version=1)

    failures = []
    for round_ in range(60):
        analysis = tmp_path / f"round-{round_}"
        analysis.mkdir()
        failures += all_at_once(lambda w: first_write(analysis, w), 8)
        with Explanations(analysis) as reader:
            assert sorted(s.settings["name"] for s in reader.sets()) == [f"run {w}" for w in range(8)] or failures
    assert failures == []


def test_parsers_and_rendering():
    assert parse_explanation('Explanation: "The word import"\nmore text') == "The word import"
    assert parse_explanation("**Answer:** commas in lists") == "commas in lists"
    assert parse_explanation("- <<import>> statements") == "import statements"
    assert parse_explanation("") is None and parse_explanation("  \n ") is None and parse_explanation("...") is None
    long = "Tokens " + "very " * 60 + "long. Second sentence."
    assert len(parse_explanation(long)) <= 160
    assert parse_yes_no(" Yes, it does") is True and parse_yes_no("**No**") is False and parse_yes_no("[yes]") is True
    assert parse_yes_no("Maybe") is None and parse_yes_no(None) is None
    assert render_context(["a", " b", " c", "\n", "d"], [1, 2]) == "a<< b c>>\\nd"
    prompt = explainer_prompt([(["x", " import", " y"], [0.0, 2.0, 0.5])], max_act=4.0, threshold=0.3)
    assert prompt.messages[-1]["content"] == 'Excerpt 1: x<< import>> y\nStrength: "import" 5'


# ----------------------------------------------------------------------------------------------
# The local backend


def test_batching_with_a_shared_prefix_is_exact(local_backend):
    """A batch (shared prefix cached once, padding between it and each prompt's own tokens) answers
    exactly what each prompt answers alone."""
    prompts = [detection_prompt('The word "the"', ["as", " part", " of", " the"]),
               detection_prompt("Commas", ["a", ",", " b"] * 5),
               fuzzing_prompt('The word "of"', ["most", " of", " it"], [1])]
    batched = local_backend.judge(prompts)
    for prompt, together in zip(prompts, batched):
        alone = local_backend.judge([prompt])[0]
        assert together.p_yes == pytest.approx(alone.p_yes, abs=1e-4)
    explain = [explainer_prompt([(["x", " of", " y"], [0, 1.0, 0])], 1.0, 0.3),
               explainer_prompt([(["a", ",", " b", ",", " c", " and", " d"], [0, 1.0, 0, 0.8, 0, 0, 0])] * 3, 1.0, 0.3)]
    texts = [c.text for c in local_backend.generate(explain, max_new_tokens=8)]
    assert texts == [local_backend.generate([p], max_new_tokens=8)[0].text for p in explain]
    assert all(texts)


def test_explain_and_score_end_to_end_with_the_local_model(analysis, local_backend, tiny_gpt2_dir):
    result = explain_features(analysis, [0, 1, 2, 3], config=EXPLAIN, backend=local_backend, progress=False)
    assert (result.n_features, result.n_explained + result.n_unparsable, result.n_already_done) == (4, 4, 0)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    with Explanations(analysis) as reader, FeatureStore(analysis) as store:
        (explanation_set,) = reader.sets()
        assert explanation_set.explainer_model == OFFLINE_MODEL_NAME
        assert explanation_set.settings["held_out_fraction"] == 0.5 and explanation_set.settings["seed"] == 0
        rows = reader.explanations(explanation_set.id)
        assert [r.feature_index for r in rows] == [0, 1, 2, 3]
        for row in rows:
            assert (row.explanation is not None) == (row.status == "ok") and row.raw_response
            shown, held_out = {tuple(r) for r in row.shown}, {tuple(r) for r in row.held_out}
            assert shown and held_out and not shown & held_out
            # the held-out contexts never reach the explainer: none of their texts is in the stored prompt
            # unless an identical context was shown too
            groups = feature_groups(store, row.feature_index, EXPLAIN.context_left, EXPLAIN.context_right)
            text_of = {tuple(c.ref): render_context(c.tokens) for cs in groups.values() for c in cs}
            prompt_text = re.sub(r"<<|>>", "", row.prompt[-1]["content"])
            for ref in held_out:
                assert text_of[ref] not in prompt_text or text_of[ref] in {text_of[s] for s in shown}
            assert all(text_of[ref] in prompt_text for ref in shown)
        parsed = [r for r in rows if r.explanation]
        if parsed:  # full-text search finds a feature by a word of its explanation
            word = re.findall(r"[A-Za-z]{3,}", parsed[0].explanation)[0]
            assert parsed[0].feature_index in [m.feature_index for m in reader.search(word)]

    scored = score_explanations(analysis, config=SCORE, backend=local_backend, progress=False)
    ok = [r.feature_index for r in rows if r.status == "ok"]
    assert scored.n_scored == 8 and scored.n_already_done == 0
    language_model = load_language_model(LanguageModelConfig(name=str(tiny_gpt2_dir)))
    dictionary = load_dictionary(analysis.parent.parent)
    with Explanations(analysis) as reader, FeatureStore(analysis) as store:
        scores = reader.scores(scored.score_set_id)
        assert {(s.feature_index, s.scorer) for s in scores} == {(f, s) for f in range(4) for s in ("detection", "fuzzing")}
        for s in scores:
            if s.feature_index not in ok:
                assert s.status == "no_explanation" and s.balanced_accuracy is None
                continue
            assert s.status == "ok" and s.explanation_feature == s.feature_index
            assert 0 <= s.balanced_accuracy <= 1 and s.auroc is not None and s.n_failed == 0
            assert all(0 <= i.p_yes <= 1 and i.prediction == (i.p_yes >= 0.5) for i in s.items)
            held_out = {tuple(r) for r in reader.explanation(s.feature_index).held_out}
            positives = [i for i in s.items if i.activating]
            assert positives and all(i.context[0] == s.feature_index and tuple(i.context[1:]) in held_out
                                     for i in positives)
            if s.scorer == "detection":  # negatives are other features' contexts where this one does not fire
                negatives = [i for i in s.items if not i.activating]
                assert negatives and all(i.context[0] != s.feature_index for i in negatives)
                contexts = [next(c for c in feature_groups(store, i.context[0], 6, 2)[i.context[1]]
                                 if c.rank == i.context[2]) for i in negatives]
                assert all(s.feature_index not in fired for fired in firing_features(language_model, dictionary, contexts))
            else:
                assert {i.marking for i in s.items} == {"correct", "wrong"}
        summary = {x.scorer: x for x in reader.summary(scored.score_set_id)}
        assert set(summary) == ({"detection", "fuzzing"} if ok else set())

    # a rerun with the same settings does nothing; other settings make another set
    again = explain_features(analysis, [0, 1, 2, 3], config=EXPLAIN, backend=local_backend, progress=False)
    assert (again.set_id, again.n_explained + again.n_unparsable, again.n_already_done) == (result.set_id, 0, 4)
    assert score_explanations(analysis, config=SCORE, backend=local_backend, progress=False).n_scored == 0
    other = explain_features(analysis, [0], config=replace(EXPLAIN, seed=1),
                             backend=local_backend, progress=False)
    assert other.set_id != result.set_id
    with Explanations(analysis) as reader:
        assert len(reader.sets()) == 2 and len(reader.explanations(result.set_id)) == 4


# ----------------------------------------------------------------------------------------------
# Scorers on features whose rule is known


def _oracle(path: str, body: dict, n: int):
    """Answers like a perfect reader of the rules: Yes when the excerpt (detection) or its marked
    tokens (fuzzing) are the word the explanation quotes."""
    question = body["messages"][-1]["content"]
    explanation, excerpt = re.match(r"Explanation: (.*)\nExcerpt: (.*)", question, re.S).groups()
    word = {e: t.strip() for e, t in zip(RULE_EXPLANATIONS, RULE_TOKENS)}[explanation]
    if "<<" in excerpt:
        marked = re.findall(r"<<(.*?)>>", excerpt)
        yes = all(m.strip() == word for m in marked)
    else:
        yes = re.search(rf"(^|\s){re.escape(word)}(?=\s|$|\W)" if word.isalpha() else re.escape(word), excerpt) is not None
    return 200, {}, chat_answer("Yes" if yes else "No")


def _write_set(analysis: Path, base_set: int, explanation_of, name: str) -> int:
    """A copy of explanation set `base_set` (same held-out split) with `explanation_of(feature)` as the text."""
    with Explanations(analysis) as reader, ExplanationsWriter(analysis) as writer:
        rows = reader.explanations(base_set)
        settings = next(s.settings for s in reader.sets() if s.id == base_set)
        set_id = writer.explanation_set({**settings, "copy_of": base_set, "name": name}, explainer_model="hand",
                                        prompt_version=1)
        writer.write_explanations([r.__class__(**{**r.__dict__, "set_id": set_id, "status": "ok",
                                                    "explanation": explanation_of(r.feature_index)}) for r in rows])
    return set_id


def test_scorers_tell_right_from_wrong_explanations_of_known_features(analysis, local_backend):
    """With answers that follow the known rules (a real HTTP server answering as a perfect reader
    would), the right explanations score 1.0 on detection and fuzzing and wrong ones far less: the
    labels, the verified negatives, the marking and the arithmetic are right. The small local model
    scores both sets too (it cannot tell them apart reliably; benchmarks/autointerp_quality.py
    measures how far it gets)."""
    base = explain_features(analysis, config=EXPLAIN, backend=local_backend, progress=False).set_id
    right = _write_set(analysis, base, lambda f: RULE_EXPLANATIONS[f], "right")
    wrong = _write_set(analysis, base, lambda f: RULE_EXPLANATIONS[(f + 1) % len(RULE_EXPLANATIONS)], "wrong")
    server = MisbehavingServer(_oracle)
    try:
        oracle = BackendConfig(kind="openai", base_url=server.base_url, model="oracle", probabilities="none")
        results = {name: score_explanations(analysis, explanation_set=set_id, config=SCORE, backend=oracle,
                                            progress=False) for name, set_id in (("right", right), ("wrong", wrong))}
    finally:
        server.close()
    means = {name: {s.scorer: s.mean_balanced_accuracy for s in r.summary} for name, r in results.items()}
    assert means["right"] == {"detection": 1.0, "fuzzing": 1.0}
    assert means["wrong"]["detection"] <= 0.75 and means["wrong"]["fuzzing"] <= 0.75
    assert all(s.n_auroc == 0 for r in results.values() for s in r.summary)  # no probabilities from this server
    small = score_explanations(analysis, [0, 1], explanation_set=right, config=SCORE, backend=local_backend,
                               progress=False)
    assert all(s.n_features == 2 and s.mean_auroc is not None for s in small.summary)


# ----------------------------------------------------------------------------------------------
# HTTP backend: a real transformers serve, and a server that misbehaves


@pytest.fixture(scope="module")
def transformers_serve():
    folder = resolve_model_source(LanguageModelConfig(name=OFFLINE_MODEL_NAME))
    port = _free_port()
    command = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())",
               "serve", str(folder), "--device", "cpu", "--host",
               "127.0.0.1", "--port", str(port), "--continuous-batching", "--log-level", "error"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited: {process.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not start within 120 s")
        yield f"http://127.0.0.1:{port}/v1", str(folder)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_http_backend_against_transformers_serve(analysis, transformers_serve):
    base_url, model = transformers_serve
    served = BackendConfig(kind="openai", base_url=base_url, model=model, concurrency=2)
    result = explain_features(analysis, [1], config=replace(EXPLAIN, max_new_tokens=6), backend=served, progress=False)
    assert result.n_explained + result.n_unparsable == 1 and result.prompt_tokens > 0
    with Explanations(analysis) as reader:
        rows = reader.explanations(result.set_id)
        assert reader.sets()[0].explainer_model == model
        assert all(json.loads(r.raw_response)["choices"][0]["message"]["content"] is not None for r in rows)
    score = ScoreConfig(n_activating=1, n_random_negatives=1, n_hard_negatives=0, scorers=("detection",))
    # transformers serve ignores chat logprobs: answers only, AUROC unavailable
    plain = score_explanations(analysis, config=score, backend=served, progress=False)
    # its /v1/systemone endpoint gives P(yes): AUROC available (another score set: other probabilities)
    systemone = score_explanations(analysis, config=score, backend=BackendConfig(
        kind="openai", base_url=base_url, model=model, probabilities="systemone"), progress=False)
    assert plain.score_set_id != systemone.score_set_id
    with Explanations(analysis) as reader:
        for s in reader.scores(plain.score_set_id):
            assert s.status in ("ok", "no_explanation") and s.auroc is None
        for s in reader.scores(systemone.score_set_id):
            if s.status == "ok":
                assert s.auroc is not None and all(0 <= i.p_yes <= 1 for i in s.items)


def test_a_server_that_is_down_is_one_clear_error_and_nothing_is_written(analysis):
    down = BackendConfig(kind="openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", model="m", max_retries=1,
                         timeout_s=5)
    with pytest.raises(BackendError, match=r"No answer from the server at .* after 1 retries; check that it is running"):
        explain_features(analysis, [1, 2], config=EXPLAIN, backend=down, progress=False)
    with Explanations(analysis) as reader:
        assert [s.n_explained + s.n_unparsable for s in reader.sets()] == [0]


def test_429_is_retried_with_backoff(analysis):
    def script(path, body, n):
        if n == 0:
            return 429, {"retry-after-ms": "400"}, '{"error": {"message": "slow down"}}'
        return 200, {}, chat_answer("The word of")

    server = MisbehavingServer(script)
    try:
        config = BackendConfig(kind="openai", base_url=server.base_url, model="m", concurrency=1)
        result = explain_features(analysis, [1], config=EXPLAIN, backend=config, progress=False)
    finally:
        server.close()
    assert result.n_explained == 1
    times = [t for t, *_ in server.requests]
    assert len(times) == 2 and times[1] - times[0] >= 0.35
    with Explanations(analysis) as reader:
        assert reader.explanation(1).explanation == "The word of"


def test_malformed_or_empty_answers_are_recorded_as_unparsable(analysis):
    answers = ["{this is not json", chat_answer(""), json.dumps({"choices": []}), chat_answer("Commas")]
    explained = iter(answers)  # one request at a time, in feature order

    def script(path, body, n):
        if body["messages"][0]["content"].startswith("You study"):
            return 200, {}, next(explained)
        return 200, {}, "{broken"  # every yes/no answer is unreadable

    server = MisbehavingServer(script)
    try:
        config = BackendConfig(kind="openai", base_url=server.base_url, model="m", concurrency=1)
        explain_features(analysis, [1, 2, 3, 4], config=EXPLAIN, backend=config, progress=False)
        with Explanations(analysis) as reader:
            rows = reader.explanations()
            raws = sorted(r.raw_response for r in rows if r.status == "unparsable")
            assert sorted(answers[:3]) == raws
            assert [r.explanation for r in rows if r.status == "ok"] == ["Commas"]
        scored = score_explanations(analysis, config=SCORE, backend=config, progress=False)
        with Explanations(analysis) as reader:
            for s in reader.scores(scored.score_set_id):
                assert s.n_failed == s.n_items and s.balanced_accuracy is None or s.status != "ok"
                assert all(i.prediction is None and i.response == "{broken" for i in s.items)
    finally:
        server.close()


def test_the_api_key_is_sent_but_never_written_or_logged(analysis, monkeypatch, caplog, capfd):
    secret = "sk-test-" + "9f3a" * 8
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", secret)
    server = MisbehavingServer(lambda path, body, n: (200, {}, chat_answer("Yes" if "Excerpt:" in str(body) else "Commas")))
    caplog.set_level(logging.DEBUG)
    try:
        config = BackendConfig(kind="openai", base_url=server.base_url, model="m", api_key_env="AUTOINTERP_TEST_KEY")
        explain_features(analysis, [1, 2], config=EXPLAIN, backend=config)
        score_explanations(analysis, config=SCORE, backend=config)
    finally:
        server.close()
    sent = [{k.lower(): v for k, v in headers.items()}.get("authorization") for _, _, headers, _ in server.requests]
    assert sent and all(value == f"Bearer {secret}" for value in sent)
    files = list(analysis.glob("explanations.sqlite*"))
    assert files and not any(secret.encode() in f.read_bytes() for f in files)
    out, err = capfd.readouterr()
    assert secret not in caplog.text and secret not in out + err
    assert secret not in repr(config) and "AUTOINTERP_TEST_KEY" in json.dumps(config.__dict__)


# ----------------------------------------------------------------------------------------------
# Killed and resumed


_RUN = """
import sys
from core import BackendConfig, ExplainConfig, explain_features
explain_features(sys.argv[1], config=ExplainConfig(**{config}), backend=BackendConfig(batch_size=8), progress=False)
"""


def test_a_run_killed_with_sigkill_resumes_to_the_same_contents(rule_dictionary, local_backend, tmp_path):
    config = dict(EXPLAIN.__dict__, features_per_step=2, max_new_tokens=6)
    killed = copy_dictionary(rule_dictionary, tmp_path / "killed") / "analysis" / "default"
    reference = copy_dictionary(rule_dictionary, tmp_path / "reference") / "analysis" / "default"
    child = subprocess.Popen([sys.executable, "-c", _RUN.format(config=config), str(killed)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    with Explanations(killed) as reader:
        while child.poll() is None and time.monotonic() < deadline:
            if reader.sets() and len(reader.explanations()) >= 2:
                break
            time.sleep(0.05)
        assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read()[-2000:]}"
        child.send_signal(signal.SIGKILL)
        child.wait()
        done_before = len(reader.explanations())
    assert 2 <= done_before < 8 and done_before % 2 == 0  # whole steps only
    resumed = explain_features(killed, config=ExplainConfig(**config), backend=local_backend, progress=False)
    assert resumed.n_already_done == done_before
    explain_features(reference, config=ExplainConfig(**config), backend=local_backend, progress=False)

    def contents(path):
        with Explanations(path) as reader:
            return [{k: v for k, v in r.to_dict().items() if k != "created_at"} for r in reader.explanations(limit=100)]

    assert contents(killed) == contents(reference) and len(contents(killed)) == 8


def test_the_example_script_reports_user_errors_in_one_line(tmp_path):
    from core.errors import ConfigError
    from run_explain_example import parse_features

    assert (parse_features("all"), parse_features("7"), parse_features("3,17,42")) == (None, 7, [3, 17, 42])
    with pytest.raises(ConfigError, match="--features is 'many'; give 'all', a number"):
        parse_features("many")
    out = subprocess.run([sys.executable, "run_explain_example.py", "--analysis", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: No feature store at"), \
        out.stderr[-2000:]
