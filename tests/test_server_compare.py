"""The compare endpoint against a real sweep run whose dictionaries were evaluated by the real evaluations
(core, absorption, sparse probing; one dictionary's sparse probing with another config) and a real
explanations file: every metric side by side, plots with the Pareto frontier, results of other configs
listed but not plotted, and one clear error for each bad request."""

from __future__ import annotations

import json
import shutil

import pytest

from core import read_eval_outputs
from server.app import create_app
from server.compare import pareto_front
from tests.conftest import TINY_HOOK
from tests.server_helpers import (CLT_DICT, DICT, REPLACEMENT_RUN, RUN, SWEEP_RUN, analyses_folder, assert_error,
                                  local_client, make_settings)

SWEEP = [f"{SWEEP_RUN}:{TINY_HOOK}-k{k}" for k in (16, 4, 8)]
"""The sweep's dictionary ids in the order the run lists them (by name)."""


@pytest.fixture(scope="module")
def results(evaluated_sweep, tiny_results_dir, analysis_dir, tiny_explanations, replacement_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    shutil.copytree(evaluated_sweep, folder / SWEEP_RUN)
    shutil.copytree(tiny_results_dir / RUN, folder / RUN, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copy(tiny_explanations, analyses_folder(folder) / "default" / "explanations.sqlite")
    shutil.copytree(replacement_run, folder / REPLACEMENT_RUN, ignore=shutil.ignore_patterns("checkpoints"))
    return folder


@pytest.fixture(scope="module")
def client(results):
    with local_client(create_app(make_settings(results))) as c:
        yield c


def evals_of(results, name: str) -> dict:
    return read_eval_outputs(results / SWEEP_RUN / "dictionaries" / name.partition(":")[2])


def test_pareto_front():
    points = [(1, 0.5), (2, 0.7), (3, 0.6), (2, 0.7), (4, 0.9), (0.5, 0.1)]
    assert pareto_front(points, higher_is_better=True) == [True, True, False, True, True, True]
    assert pareto_front(points, higher_is_better=False) == [False, False, False, False, False, True]
    assert pareto_front([], higher_is_better=True) == []


def test_a_runs_dictionaries_side_by_side(client, results):
    body = client.get("/api/compare", params={"run": SWEEP_RUN}).json()
    assert [d["id"] for d in body["dictionaries"]] == SWEEP and body["run"] == SWEEP_RUN
    assert body["space"] == {"model_name": body["space"]["model_name"], "hook_name": TINY_HOOK, "hook_out": None,
                             "layers": None}
    assert body["candidates"] == [DICT]  # the tiny run's dictionary: same model and hook
    rows = {(m["source"], m["metric"]): m for m in body["metrics"]}
    for i, name in enumerate(SWEEP):
        config = json.loads((results / SWEEP_RUN / "dictionaries" / name.partition(":")[2] / "config.json").read_text())
        assert rows["final", "l0"]["values"][i] == pytest.approx(config["metrics"]["l0"])
        assert body["dictionaries"][i]["l0"] == pytest.approx(config["metrics"]["l0"])
        evals = evals_of(results, name)
        for eval_type, category, metric in (("core", "model_performance_preservation", "ce_loss_score"),
                                            ("absorption_first_letter", "mean", "mean_absorption_fraction_score"),
                                            ("sparse_probing", "sae", "sae_top_1_test_accuracy")):
            expected = evals[eval_type]["eval_result_metrics"][category][metric]
            assert rows[eval_type, f"{category}.{metric}"]["values"][i] == pytest.approx(expected)
    assert [m["source"] for m in body["metrics"]][0] == "final"


def test_results_of_another_config_are_listed_not_plotted(client, results):
    body = client.get("/api/compare", params={"run": SWEEP_RUN}).json()
    probing = [c for c in body["configs"] if c["source"] == "sparse_probing"]
    reference = next(c for c in probing if c["reference"])
    other = next(c for c in probing if not c["reference"])
    assert sorted(reference["dictionaries"]) == sorted(SWEEP[1:]) and other["dictionaries"] == [SWEEP[0]]
    assert other["differences"] == [{"field": "context_length", "reference": 24, "value": 20}]
    assert all(c["reference"] for c in body["configs"] if c["source"] != "sparse_probing")
    row = next(m for m in body["metrics"] if m["metric"] == "sae.sae_top_1_test_accuracy")
    assert row["excluded"] == [True, False, False] and row["values"][0] is not None
    plot = next(p for p in body["plots"] if p["key"] == "sparse_probing")
    assert plot["excluded"] == [SWEEP[0]] and [p["dictionary"] for p in plot["points"]] == SWEEP[1:]


def test_every_plot_marks_its_pareto_frontier(client):
    body = client.get("/api/compare", params={"run": SWEEP_RUN}).json()
    l0 = {d["id"]: d["l0"] for d in body["dictionaries"]}
    keys = [p["key"] for p in body["plots"]]
    assert keys == ["explained_variance", "ce_loss_recovered", "absorption", "sparse_probing", "interpretability"]
    for plot in body["plots"]:
        for p in plot["points"]:
            assert p["x"] == l0[p["dictionary"]]
            better = [q for q in plot["points"] if q is not p and q["x"] <= p["x"] and (
                q["y"] >= p["y"] if plot["higher_is_better"] else q["y"] <= p["y"]) and (q["x"], q["y"]) != (p["x"], p["y"])]
            assert p["pareto"] == (not better), (plot["key"], p)
    by_key = {p["key"]: p for p in body["plots"]}
    assert len(by_key["explained_variance"]["points"]) == 3 and not by_key["absorption"]["higher_is_better"]
    assert by_key["interpretability"]["points"] == [] and by_key["interpretability"]["missing"] == SWEEP
    assert any(p["pareto"] for p in by_key["explained_variance"]["points"])


def test_chosen_dictionaries_with_explanations(client, tiny_explanations):
    body = client.get("/api/compare", params={"dictionary": [DICT, SWEEP[1]]}).json()
    assert [d["id"] for d in body["dictionaries"]] == [DICT, SWEEP[1]] and body["run"] is None
    assert sorted(body["candidates"]) == sorted([SWEEP[0], SWEEP[2]])
    plot = next(p for p in body["plots"] if p["key"] == "interpretability")
    assert [p["dictionary"] for p in plot["points"]] == [DICT] and plot["points"][0]["pareto"]
    rows = {(m["source"], m["metric"]): m["values"] for m in body["metrics"]}
    detection, fuzzing = rows["explanations", "detection"][0], rows["explanations", "fuzzing"][0]
    assert rows["explanations", "interpretability"][0] == pytest.approx((detection + fuzzing) / 2)
    assert plot["points"][0]["y"] == pytest.approx((detection + fuzzing) / 2)
    # the tiny dictionary has no evaluations: its eval rows are empty, never an error
    assert rows["core", "sparsity.l0"] == [None, pytest.approx(rows["core", "sparsity.l0"][1])]


def test_a_damaged_result_file_is_reported_for_its_dictionary(client, results):
    path = next((results / SWEEP_RUN / "dictionaries" / f"{TINY_HOOK}-k8" / "evals" / "core").glob("*.json"))
    saved = path.read_text()
    try:
        path.write_text("{not json")
        body = client.get("/api/compare", params={"run": SWEEP_RUN}).json()
        errors = {d["id"]: d["errors"] for d in body["dictionaries"]}
        assert errors[SWEEP[0]] == errors[SWEEP[1]] == [] and "not readable JSON" in errors[SWEEP[2]][0]
        assert len(next(p for p in body["plots"] if p["key"] == "explained_variance")["points"]) == 3
    finally:
        path.write_text(saved)


def test_bad_requests(client):
    assert_error(client.get("/api/compare"), 422, "'run'", "'dictionary'")
    assert_error(client.get("/api/compare", params={"run": SWEEP_RUN, "dictionary": DICT}), 422, "either")
    assert_error(client.get("/api/compare", params={"run": "nope"}), 404, "nope")
    assert_error(client.get("/api/compare", params={"run": SWEEP_RUN, "space": 1}), 422, "space", "0..0")
    assert_error(client.get("/api/compare", params={"dictionary": [DICT, "nope:x"]}), 404, "nope:x")
    assert_error(client.get("/api/compare", params={"dictionary": [DICT, CLT_DICT]}), 422, CLT_DICT, "model and hook")
    assert_error(client.get("/api/compare", params={"dictionary": [DICT] * 2 + [f"x{i}" for i in range(70)]}), 422,
                 "at most")
