"""What the server tests share: settings, clients, fixtures over the tiny analysis, and a real
uvicorn process. Test modules import the fixtures they use from here."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.conftest import ROOT, TINY_HOOK

RUN = "tiny-topk"
DICT = f"{RUN}:{TINY_HOOK}"
"""The tiny dictionary's id: results/tiny-topk/dictionaries/blocks.0.hook_resid_post/."""
GRAPH_RUN = "tiny-graphs"
GRAPH_DICT = f"{GRAPH_RUN}:mlp1"
"""A transcoder set of the tiny GPT-2's block 1 (random weights) with an analysis and a saved graph."""
GRAPH_SLUG = "cat"
GRAPH_PROMPT = "The cat sat on the mat because it was"
SWEEP_RUN = "tiny-sweep"
SWEEP_K = (4, 8, 16)
"""The sweep run trains one dictionary per k (on the tiny dictionary's model and hook)."""
MAX_CHARS = 300
MAX_TOKENS = 24
TEXT = "The quick brown fox jumps over the lazy dog.\nHello world, this is a test."


def local_client(app, **kwargs) -> TestClient:
    """A TestClient that addresses the app as a browser on this machine does (Host: 127.0.0.1)."""
    return TestClient(app, base_url="http://127.0.0.1", **kwargs)


def make_settings(results_dir: Path, **overrides) -> Settings:
    values = dict(results_dir=results_dir, ui_dist=results_dir / "no-ui-dist", max_text_chars=MAX_CHARS,
                  max_text_tokens=MAX_TOKENS)
    values.update(overrides)
    return Settings(_env_file=None, **values)


def dictionary_folder(results: Path, run: str = RUN) -> Path:
    """Where the tiny dictionary (or its copy in run `run`) sits in `results`."""
    return results / run / "dictionaries" / TINY_HOOK


def analyses_folder(results: Path, run: str = RUN) -> Path:
    return dictionary_folder(results, run) / "analysis"


@pytest.fixture(scope="module")
def analysis_dir(tiny_analysis, tiny_results_dir) -> Path:
    folder = analyses_folder(tiny_results_dir) / "default"
    assert (folder / "features.sqlite").is_file()
    return folder


@pytest.fixture(scope="session")
def tiny_sweep_run(tiny_gpt2_dir, tiny_model, tmp_path_factory) -> Path:
    """A run of three top-k dictionaries (k in SWEEP_K) trained from one pass of the tiny GPT-2, with
    periodic evaluations: `<folder>/tiny-sweep/` (metrics.jsonl, dictionaries/<name>/)."""
    from dataclasses import replace

    from core import train
    from tests.conftest import tiny_training_config

    results = tmp_path_factory.mktemp("sweep-results")
    cfg = tiny_training_config(tiny_gpt2_dir, results, exp_name=SWEEP_RUN, steps=30, eval_every_steps=10)
    train(replace(cfg, sweep=(f"sae.k={','.join(map(str, SWEEP_K))}",)), model=tiny_model)
    return results / SWEEP_RUN


@pytest.fixture(scope="session")
def graph_run(tiny_gpt2_dir, tiny_model, tmp_path_factory) -> Path:
    """`<results>/tiny-graphs/`: a replacement model (a transcoder set of block 1's MLP, random jumprelu
    weights), its analysis, and the attribution graph of GRAPH_PROMPT saved as `graphs/cat.json`."""
    import torch

    from core import SAEConfig, TranscoderSet, analyze, attribute, create_dictionary, save_graph
    from tests.conftest import tiny_analysis_config
    from tests.test_circuit_tracer import randomized

    results = tmp_path_factory.mktemp("graph-results")
    folder = results / GRAPH_RUN / "dictionaries" / "mlp1"
    torch.manual_seed(0)
    member = create_dictionary(SAEConfig(architecture="jumprelu", d_sae=96, skip_connection=True), tiny_model.d_model,
                               hook_name="blocks.1.mlp.hook_in", hook_out="blocks.1.hook_mlp_out",
                               d_out=tiny_model.d_model, model_name=str(tiny_gpt2_dir))
    randomized(member, 3)
    TranscoderSet([member]).save(folder)
    analyze(tiny_analysis_config(folder, tiny_gpt2_dir), model=tiny_model)
    graph = attribute(GRAPH_PROMPT, folder, tiny_model, max_feature_nodes=200)
    save_graph(graph, slug=GRAPH_SLUG)
    return results / GRAPH_RUN


REPLACEMENT_RUN = "tiny-replacement"
CLT_DICT = f"{REPLACEMENT_RUN}:clt"
SET_DICT = f"{REPLACEMENT_RUN}:transcoders"
"""A cross-layer transcoder and a transcoder set over both blocks of the tiny GPT-2, each analyzed."""


@pytest.fixture(scope="session")
def replacement_run(tiny_gpt2_dir, tiny_model, tmp_path_factory) -> Path:
    """`<folder>/tiny-replacement/`: a CLT (`clt`) and a transcoder set (`transcoders`) over blocks 0-1,
    trained from one pass of the tiny GPT-2 (batchtopk, a few seconds) with their final per-layer
    evaluation, and an analysis "default" of each."""
    from dataclasses import replace

    from core import DictionaryConfig, analyze, train
    from tests.conftest import tiny_analysis_config, tiny_training_config

    results = tmp_path_factory.mktemp("replacement-results")
    cfg = tiny_training_config(tiny_gpt2_dir, results, exp_name=REPLACEMENT_RUN, steps=24)
    cfg = replace(cfg, sae=replace(cfg.sae, architecture="batchtopk", normalize_activations="expected_average_only_in",
                                   dead_tokens_threshold=10 ** 9),
                  dictionaries=(DictionaryConfig(name="clt", kind="clt", layers="0..1"),
                                DictionaryConfig(name="transcoders", kind="transcoder_set", layers="0..1")))
    trained = train(cfg, model=tiny_model)
    for folder in trained.dictionary_paths.values():
        analyze(tiny_analysis_config(folder, tiny_gpt2_dir, total_analyzing_tokens=2000), model=tiny_model)
    return results / REPLACEMENT_RUN


EXPLAINED_FEATURES = 40
"""Alive features of the tiny analysis that `tiny_explanations` explains."""


@pytest.fixture(scope="session")
def tiny_explanations(tiny_dictionary, tiny_analysis, tiny_model, tmp_path_factory) -> Path:
    """An explanations.sqlite of the tiny analysis (EXPLAINED_FEATURES alive features, detection and fuzzing
    scores) written by the real explainer and scorers through a real OpenAI-compatible HTTP server that
    answers as a reader of tokens (`tests.autointerp_helpers.token_reader`). Copy it next to a copy of the
    analysis' features.sqlite to use it."""
    from core import BackendConfig, ExplainConfig, ScoreConfig, explain_features, score_explanations
    from tests.autointerp_helpers import MisbehavingServer, token_reader

    dictionary = tmp_path_factory.mktemp("explained") / RUN / "dictionaries" / TINY_HOOK
    shutil.copytree(tiny_dictionary, dictionary)  # with its analysis: the scorers read the dictionary beside it
    folder = dictionary / "analysis" / tiny_analysis.name
    server = MisbehavingServer(token_reader)
    try:
        backend = BackendConfig(kind="openai", base_url=server.base_url, model="token-reader", probabilities="none")
        explain_features(folder, EXPLAINED_FEATURES, config=ExplainConfig(n_top_shown=3, n_interval_shown=2),
                         backend=backend, progress=False)
        score_explanations(folder, config=ScoreConfig(n_activating=3, n_random_negatives=2, n_hard_negatives=1),
                           backend=backend, model=tiny_model, progress=False)
    finally:
        server.close()
    return folder / "explanations.sqlite"


@pytest.fixture(scope="session")
def evaluated_sweep(tiny_sweep_run, tiny_model, tmp_path_factory) -> Path:
    """A copy of the sweep run whose three dictionaries have every evaluation (core, absorption with its gates
    lowered for the random tiny model, sparse probing; seconds), except that the k=16 dictionary's sparse
    probing was rerun with another `context_length`, so its config differs from the others'."""
    from dataclasses import replace

    from core import AbsorptionConfig, CoreEvalConfig, EvaluationConfig, SparseProbingConfig, run_evaluations

    run = tmp_path_factory.mktemp("evaluated") / SWEEP_RUN
    shutil.copytree(tiny_sweep_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    small = EvaluationConfig(
        core=CoreEvalConfig(n_eval_reconstruction_batches=2, batch_size_prompts=4),
        absorption=AbsorptionConfig(max_words=300, min_GT_probe_f1=0.0, min_feats_for_eval=1,
                                    k_sparse_probe_num_epochs=5),
        sparse_probing=SparseProbingConfig(probe_train_set_size=60, probe_test_set_size=30, context_length=24))
    done = run_evaluations([run], small, model=tiny_model)
    assert not done.skipped, done.skipped
    other = replace(small, evals=("sparse_probing",), sparse_probing=replace(small.sparse_probing, context_length=20))
    run_evaluations([run / "dictionaries" / f"{TINY_HOOK}-k16"], other, model=tiny_model)
    return run


@pytest.fixture()
def results_copy(analysis_dir, tiny_results_dir, tmp_path) -> Path:
    """A private results folder holding a copy of the tiny dictionary's run and its analysis."""
    results = tmp_path / "results"
    shutil.copytree(tiny_results_dir / RUN, results / RUN, ignore=shutil.ignore_patterns("checkpoints"))
    return results


def features_url(name: str = DICT, analysis: str = "default") -> str:
    return f"/api/dictionaries/{name}/analyses/{analysis}/features"


def assert_error(response, status: int, *words: str) -> str:
    """The server's error shape: `status`, JSON {"detail": one string naming `words`}, no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "Traceback" not in detail
    for word in words:
        assert word in detail, detail
    return detail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_server(results_dir: Path, settings: dict[str, str] | None = None, *, host: str = "127.0.0.1",
                   log_level: str = "warning") -> Iterator[str]:
    """A real `uvicorn server.app:app` process serving `results_dir` (plus GPT2DICT_* `settings`);
    yields its base URL once /api/health answers, stops it afterwards."""
    port = free_port()
    command = ["-m", "uvicorn", "server.app:app", "--host", host, "--port", str(port), "--log-level", log_level]
    with server_process(command, f"http://{host}:{port}", results_dir, settings) as url:
        yield url


@contextmanager
def server_process(arguments: list[str], url: str, results_dir: Path, settings: dict[str, str] | None = None,
                   log: Path | None = None, *, cwd: Path = ROOT, path: str | None = None,
                   startup_s: float = 60) -> Iterator[str]:
    """`python <arguments>` run in `cwd` serving `results_dir` at `url` (plus GPT2DICT_* `settings`; the
    environment's own GPT2DICT_* variables are left out; `path` replaces PATH), its output in `log` (a
    file: a chatty server never blocks on it); yields `url` once /api/health answers there (within
    `startup_s`), stops the process afterwards."""
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("GPT2DICT_")}
    env.update({"GPT2DICT_RESULTS_DIR": str(results_dir), "GPT2DICT_UI_DIST": str(Path(results_dir) / "no-ui-dist"),
                **(settings or {})})
    if path is not None:
        env["PATH"] = path
    with (log.open("w+") if log else tempfile.TemporaryFile("w+")) as out:
        proc = subprocess.Popen([sys.executable, *arguments], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_s
            while True:
                if proc.poll() is not None:
                    out.seek(0)
                    raise RuntimeError(f"the server exited with code {proc.returncode}:\n{out.read()[-3000:]}")
                try:
                    if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    out.seek(0)
                    raise RuntimeError(f"the server did not answer {url}/api/health within {startup_s:g} s:\n"
                                       f"{out.read()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RawResponse(NamedTuple):
    status: int
    headers: dict[str, str]
    """Lowercased names."""
    body: bytes

    def json(self):
        import json

        return json.loads(self.body)


def raw_http(base_url: str, request: bytes, *, timeout: float = 30.0) -> RawResponse:
    """Send `request` (bytes, exactly as given: any request line, headers or body) over a new TCP
    connection and read the answer until the server closes it. Send `Connection: close` (or a request
    the server refuses) so it does."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        raise AssertionError(f"not an HTTP answer: {data[:200]!r}")
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return RawResponse(int(lines[0].split()[1]), headers, body)


def request_bytes(method: str, target: str | bytes, *, host: str | bytes | None = "127.0.0.1",
                  headers: dict[str, str | bytes] | None = None, body: bytes | None = None) -> bytes:
    """An HTTP/1.1 request with `Connection: close`, byte for byte as given (no encoding or checks)."""
    enc = (lambda v: v if isinstance(v, bytes) else v.encode("utf-8"))
    lines = [enc(method) + b" " + enc(target) + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + enc(host))
    for name, value in (headers or {}).items():
        lines.append(enc(name) + b": " + enc(value))
    if body is not None and not any(name.lower() in ("content-length", "transfer-encoding") for name in headers or {}):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
