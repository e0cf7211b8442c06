"""Replacement models in the viewer's server, against a real CLT and transcoder set trained on the tiny
GPT-2 and analyzed: listed as one dictionary each (kind, layers, members not listed), their per-layer
evaluation, a feature's layer and decoder norms per target layer (from the weights), custom text through
every covered layer, flat feature indices for labels; what does not apply to them is one clear 422."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from core import encode_text, load_dictionary
from server.app import create_app
from tests.server_helpers import (CLT_DICT, DICT, REPLACEMENT_RUN, SET_DICT, TEXT, assert_error, local_client,
                                  make_settings)


@pytest.fixture(scope="module")
def results(replacement_run, analysis_dir, tiny_results_dir, tmp_path_factory):
    from tests.server_helpers import RUN

    folder = tmp_path_factory.mktemp("results")
    shutil.copytree(tiny_results_dir / RUN, folder / RUN, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(replacement_run, folder / REPLACEMENT_RUN, ignore=shutil.ignore_patterns("checkpoints"))
    return folder


@pytest.fixture(scope="module")
def client(results):
    with local_client(create_app(make_settings(results))) as c:
        yield c


def folder_of(results, name: str):
    return results / REPLACEMENT_RUN / "dictionaries" / name.partition(":")[2]


def test_each_replacement_model_is_one_dictionary_with_its_kind_and_layers(client, results):
    listed = {d["name"]: d for d in client.get("/api/dictionaries").json()["dictionaries"]}
    assert sorted(listed) == sorted([DICT, CLT_DICT, SET_DICT])  # a set's member folders are not listed
    clt, tset = listed[CLT_DICT], listed[SET_DICT]
    assert (clt["kind"], clt["layers"], clt["architecture"]) == ("cross_layer_transcoder", [0, 1], "batchtopk")
    assert (tset["kind"], tset["layers"], tset["architecture"]) == ("transcoder_set", [0, 1], "batchtopk")
    for d in (clt, tset):
        config = json.loads((folder_of(results, d["name"]) / "config.json").read_text())
        assert (d["hook_name"], d["hook_out"]) == (config["hook_names"][0], config["hooks_out"][0])
        assert d["n_features"] == 2 * d["d_sae"] == 2 * config["d_sae"]
        assert d["analyses"] == ["default"]
        # the overall metrics are of the whole replacement: every covered MLP replaced at once
        assert d["metrics"]["ce_loss_recovered"] == pytest.approx(config["metrics"]["ce_loss_recovered"])
        assert d["metrics"]["l0"] == pytest.approx(sum(config["metrics"]["layers"]["l0"]))


def test_the_detail_has_the_evaluation_per_layer(client, results):
    for name in (CLT_DICT, SET_DICT):
        body = client.get(f"/api/dictionaries/{name}").json()
        saved = json.loads((folder_of(results, name) / "config.json").read_text())["metrics"]["layers"]
        assert [row["layer"] for row in body["layer_metrics"]] == saved["layer"] == [0, 1]
        for i, row in enumerate(body["layer_metrics"]):
            for key in ("normalized_mse", "explained_variance", "l0", "unfired_features"):
                assert row[key] == pytest.approx(saved[key][i])
        assert body["analysis_summaries"][0]["n_features"] == body["n_features"]


def test_a_features_layer_and_where_it_writes(client, results):
    clt = load_dictionary(folder_of(results, CLT_DICT))
    d = clt.d_sae
    for index, layer, targets in ((3, 0, [0, 1]), (d + 5, 1, [1])):
        body = client.get(f"/api/dictionaries/{CLT_DICT}/features/{index}/replacement").json()
        assert (body["index"], body["layer"], body["layer_index"], body["target_layers"]) == (index, layer, index % d,
                                                                                            targets)
        expected = clt.decoder_vectors(layer, torch.tensor([index % d]))[0].norm(dim=-1)
        assert body["decoder_norms"] == pytest.approx(expected.tolist(), rel=1e-5)
    tset = load_dictionary(folder_of(results, SET_DICT))
    body = client.get(f"/api/dictionaries/{SET_DICT}/features/{tset.d_sae + 2}/replacement").json()
    assert (body["layer"], body["layer_index"], body["target_layers"]) == (1, 2, [1])  # a set writes to its own layer
    assert body["decoder_norms"] == pytest.approx([float(tset.member(1).W_dec[2].detach().norm())], rel=1e-5)
    # the analysis holds every layer's features under the same flat index
    feature = client.get(f"/api/dictionaries/{CLT_DICT}/analyses/default/features/{d + 5}").json()
    assert feature["index"] == d + 5 and feature["d_sae"] == 2 * d


def test_what_does_not_apply_is_one_clear_error(client):
    n = client.get(f"/api/dictionaries/{CLT_DICT}").json()["n_features"]
    assert_error(client.get(f"/api/dictionaries/{CLT_DICT}/features/{n}/replacement"), 404, f"0..{n - 1}")
    assert_error(client.get(f"/api/dictionaries/{DICT}/features/0/replacement"), 422, "not a replacement model")
    assert_error(client.post(f"/api/dictionaries/{CLT_DICT}/features/0/steer", json={"prompt": "Hi", "strength": 2}),
                 422, "replacement model")
    assert_error(client.get(f"/api/dictionaries/{CLT_DICT}/features/0/similar"), 422, "replacement model")


def test_custom_text_runs_every_covered_layer(client, results, tiny_model):
    clt = load_dictionary(folder_of(results, CLT_DICT))
    feature = clt.d_sae + 1  # a layer-1 feature: reads block 1's MLP input
    body = client.post(f"/api/dictionaries/{CLT_DICT}/activations", json={"text": TEXT, "feature": feature}).json()
    expected = encode_text(tiny_model, clt, TEXT)
    assert body["tokens"] == expected.tokens
    assert body["feature"]["acts"] == pytest.approx(expected.feature(feature).tolist(), abs=1e-5)
    assert all(0 <= f["index"] < 2 * clt.d_sae for row in body["top_features"] for f in row)


def test_labels_use_the_flat_index(client):
    n = client.get(f"/api/dictionaries/{SET_DICT}").json()["n_features"]
    saved = client.put(f"/api/dictionaries/{SET_DICT}/features/{n - 1}/annotation",
                       json={"label": "last feature of layer 1", "version": 0})
    assert saved.status_code == 200, saved.text
    rows = client.get(f"/api/dictionaries/{SET_DICT}/analyses/default/features",
                      params={"sort": "index", "order": "desc", "limit": 1}).json()["features"]
    assert (rows[0]["index"], rows[0]["label"]) == (n - 1, "last feature of layer 1")


def test_the_feature_table_by_layer(client):
    d = client.get(f"/api/dictionaries/{CLT_DICT}").json()["d_sae"]
    rows = client.get(f"/api/dictionaries/{CLT_DICT}/analyses/default/features",
                      params={"sort": "index", "order": "asc", "limit": 500}).json()["features"]
    assert [r["layer"] for r in rows] == [r["index"] // d for r in rows]  # layers 0 and 1: position = layer
    layer1 = client.get(f"/api/dictionaries/{CLT_DICT}/analyses/default/features",
                        params={"layer": 1, "sort": "max_act", "limit": 500}).json()
    assert layer1["total"] == d and {r["layer"] for r in layer1["features"]} == {1}
    assert all(d <= r["index"] < 2 * d for r in layer1["features"])
    assert_error(client.get(f"/api/dictionaries/{CLT_DICT}/analyses/default/features", params={"layer": 7}), 422,
                 "covers layers [0, 1]")
    assert_error(client.get(f"/api/dictionaries/{DICT}/analyses/default/features", params={"layer": 0}), 422,
                 "not a replacement model")
