"""Fuzzing a real uvicorn process: every endpoint (browsing, custom text, search, labels, steering,
runs, explanations, comparison; not the jobs, which start a language model) with malformed, huge, negative, non-UTF-8, path-like and unicode path parameters, query
parameters, JSON and raw bodies and content types.

Two passes, both sent byte for byte over a raw socket so nothing is normalized on the way:

1. a sweep: a valid request to each endpoint with one part replaced by each nasty value of the
   corpus below in turn (every path segment, every query parameter, every body field, the raw
   body, the content type, the method, the Host);
2. random combinations of two or three such replacements, from a seeded generator (the seed and
   the request are in every failure message).

Every answer must be one of the statuses the API documents, JSON errors must be one sentence
with no traceback, and 500 is allowed only for the corrupt analysis planted in the results folder.
Afterwards the server still answers health and computes custom text.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

import httpx

from tests.server_helpers import DICT, analyses_folder, raw_http, request_bytes, uvicorn_server

SEED = 20240917
RANDOM_REQUESTS = 400
TIME_BUDGET_S = 120.0
MAX_BODY = 8192

SEGMENTS = [DICT, "default", "broken", "random", "0", "5", "127", "128", "-1", "-0", "007", "1.5", "1e3", "0x1f",
            "9" * 30, "-" + "9" * 25, "nan", "inf", "-inf", "", ".", "..", ".hidden", "%2e%2e", "%2E", "%2F",
            "..%2F..%2Fetc%2Fpasswd", "..%5C..", "%00", "%0A", "%0d%0a", "%ff", "%fe%ff", "%", "%zz", "%C3%A9t%C3%A9",
            "%E2%80%AE", "%F0%9F%98%80", "%ED%A0%80", "con", "features", "analyses", "a" * 300, "%27%20OR%201=1--",
            "%3Cscript%3E", "~", "%252e%252e", "dictionary", "config.json", "features.sqlite"]
RAW_SEGMENTS = ["\xff\xfe".encode("latin-1"), "été".encode(), "😀".encode(), b"a b", b"\x00", b"..\\..", b"%"]
NUMBERS = ["0", "1", "-1", "50", "500", "501", "1e400", "-1e400", "nan", "NaN", "inf", "-Infinity", "1e-320",
           str(2**63), str(2**63 - 1), str(2**64), str(-2**63), "1" + "0" * 30, "-" + "9" * 30, "1" + "0" * 400,
           "1_000", "%201", "0.5", "", "%00", "true", "null", "0x10", "%E2%88%9E", "+5", "5e", "%F0%9F%98%80",
           "max_act", "asc", "a" * 300]
FEATURE_QUERY = {"sort": "max_act", "order": "desc", "min_density": "0", "max_density": "1", "min_max_act": "0",
                 "offset": "10", "limit": "50"}
QUERIES = {"features": FEATURE_QUERY, "search": {"q": "%20the", "limit": "5"}, "similar": {"limit": "5"},
           "labels": {"q": "x"}, "search_explanations": {"q": "token", "limit": "5"}, "compare": {"run": DICT.split(":")[0]}}
"""A valid query string per route (routes without one take none)."""
QUERY_KEYS = {"q": ["search", "labels", "search_explanations"], "token_id": ["search"],
              "limit": ["features", "search", "similar", "labels", "search_explanations"],
              "dictionary": ["similar", "compare"], "bookmarked": ["features", "labels"], "run": ["compare"],
              "space": ["compare"], "min_detection": ["features"], "min_fuzzing": ["features"]}
"""Which routes a query parameter means something to (FEATURE_QUERY's: features; others: features)."""
BODIES = {"activations": {"text": "Hello world", "feature": 3, "top_k": 5},
          "steer": {"prompt": "Hello", "strength": 3.0, "max_new_tokens": 3, "temperature": 0.0, "seed": 1},
          "annotate": {"label": "fuzz", "notes": "n", "bookmarked": False, "version": 0}}
"""A valid body per route that takes one."""
JSON_VALUES = ["", "hi", "x" * 301, "é" * 120, "\x00\x01\x1f", "😀" * 60, "\u202e\u200b", "<|endoftext|>" * 5,
               "\ud800", 0, 1, -1, 20, 21, 127, 128, 10**30, -10**30, 2**63, 2**64, 0.5, -0.0, 1e308, None, True,
               [], ["hi"], {}, {"text": "hi"}]
RAW_BODIES = [b"", b"null", b"[]", b"1", b'"text"', b'{"text": "hi"', b'{"text": "hi"}}', b"\xff\xfe\x00{",
              b'{"text": "\\ud800\\udfff\\ud800"}', b'{"text": "hi", "top_k": NaN, "feature": Infinity}',
              b'{"text": "' + b"x" * (MAX_BODY + 100) + b'"}', b'{"text": ' + b"[" * 3000 + b"]" * 3000 + b"}",
              b'{"text": "hi", "feature": ' + b"9" * 4500 + b"}", b'{"text": "hi", "text": ""}',
              "{\"text\": \"hi\"}".encode("utf-16"), b"text=hi&feature=3", b"--xyz\r\n\r\nhi\r\n--xyz--"]
CONTENT_TYPES = [None, "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=xyz", "application/json; charset=latin-1", "application/vnd.api+json",
                 "\x01garbage", "application/json; charset=utf-16", "*/*", "application/" + "j" * 500]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"]
HOSTS = ["evil.example", "", "localhost:99999999", "[::1", "127.0.0.1:1@x", "127.0.0.1:24577"]
ROUTES = ["health", "list", "dictionary", "features", "random", "feature", "activations", "ui", "api", "search",
          "similar", "labels", "export", "annotation", "annotate", "steer", "runs", "run", "explanations",
          "search_explanations", "compare"]
ALLOWED = {200, 400, 404, 405, 409, 413, 422}


@dataclass
class Spec:
    """One request: a route with its parts, each of which the fuzzer may replace."""

    route: str
    path: dict[str, bytes] = field(default_factory=lambda: {"name": DICT.encode(), "analysis": b"default",
                                                           "index": b"5"})
    query: dict[str, str] = field(default_factory=dict)
    body: dict | None = None
    raw_body: bytes | None = None
    content_type: str | None = "application/json"
    method: str | None = None
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.body is None:
            self.body = dict(BODIES.get(self.route, BODIES["activations"]))

    def request(self) -> bytes:
        name = b"/api/dictionaries/" + self.path["name"]
        analysis = name + b"/analyses/" + self.path["analysis"]
        features = analysis + b"/features"
        feature = name + b"/features/" + self.path["index"]
        target = {"health": b"/api/health", "list": b"/api/dictionaries", "dictionary": name, "features": features,
                  "random": features + b"/random", "feature": features + b"/" + self.path["index"],
                  "activations": name + b"/activations", "ui": b"/" + self.path["name"] + b"/" + self.path["index"],
                  "api": b"/api/" + self.path["name"], "search": analysis + b"/search/tokens",
                  "similar": feature + b"/similar", "labels": name + b"/annotations",
                  "export": name + b"/annotations/export", "annotation": feature + b"/annotation",
                  "annotate": feature + b"/annotation", "steer": feature + b"/steer", "runs": b"/api/runs",
                  "run": b"/api/runs/" + self.path["name"].split(b":")[0],  # the dictionary's run
                  "explanations": features + b"/" + self.path["index"] + b"/explanations",
                  "search_explanations": analysis + b"/search/explanations", "compare": b"/api/compare"}[self.route]
        if self.query:
            target += b"?" + "&".join(f"{k}={v}" for k, v in self.query.items()).encode()
        method = self.method or {"activations": "POST", "steer": "POST", "annotate": "PUT"}.get(self.route, "GET")
        payload = headers = None
        if method in ("POST", "PUT", "PATCH"):
            payload = self.raw_body if self.raw_body is not None else json.dumps(self.body).encode()
            headers = {} if self.content_type is None else {"Content-Type": self.content_type}
        return request_bytes(method, target, host=self.host, headers=headers, body=payload)

    @property
    def corrupt(self) -> bool:
        """It reads the planted corrupt analysis, where a 500 is the documented answer."""
        return (self.route in ("features", "random", "feature", "search", "explanations", "search_explanations")
                and self.path["analysis"] == b"broken"
                and self.path["name"] == DICT.encode())


def replacements() -> Iterator[tuple[str, str, object]]:
    """(part, key, nasty value): every single replacement the corpus allows."""
    for key in ("name", "analysis", "index"):
        for value in [s.encode() for s in SEGMENTS] + RAW_SEGMENTS:
            yield "path", key, value
    for key in [*FEATURE_QUERY, *QUERY_KEYS, "x", "", "offset[]", "%00", "SORT"]:
        for value in NUMBERS + SEGMENTS[:12]:
            yield "query", key, value
    for key in [*{k for body in BODIES.values() for k in body}, "extra"]:
        for value in JSON_VALUES + [KeyError]:  # KeyError: the field left out
            yield "body", key, value
    for value in RAW_BODIES:
        yield "raw_body", "", value
    for value in CONTENT_TYPES:
        yield "content_type", "", value
    for value in METHODS:
        yield "method", "", value
    for value in HOSTS:
        yield "host", "", value


def routes_of(part: str, key: str) -> list[str]:
    """The routes a replacement of `part`/`key` means something to."""
    if part == "path":
        return {"name": ["dictionary", "features", "activations", "api", "search", "similar", "labels", "export",
                         "annotation", "annotate", "steer", "run", "explanations", "search_explanations"],
                "analysis": ["features", "feature", "search", "explanations", "search_explanations"],
                "index": ["feature", "similar", "annotation", "annotate", "steer", "explanations"]}[key]
    if part == "query":
        return QUERY_KEYS.get(key, ["features"])
    if part == "body":
        return [route for route, body in BODIES.items() if key in body] or list(BODIES)
    if part in ("raw_body", "content_type"):
        return list(BODIES)
    if part == "host":
        return ["health", "activations", "annotate"]
    return ROUTES


def apply(spec: Spec, part: str, key: str, value) -> Spec:
    if part == "path":
        return replace(spec, path={**spec.path, key: value})
    if part == "query":
        return replace(spec, query={**spec.query, key: value})
    if part == "body":
        body = {k: v for k, v in spec.body.items() if k != key}
        return replace(spec, body=body if value is KeyError else {**body, key: value})
    return replace(spec, **{part: value})


def sweep() -> Iterator[Spec]:
    """Each single replacement on each route it means something to."""
    for part, key, value in replacements():
        for route in dict.fromkeys(routes_of(part, key)):
            yield apply(Spec(route, query=dict(QUERIES.get(route, {}))), part, key, value)


def random_specs(rng: random.Random, n: int) -> Iterator[Spec]:
    """Valid requests with two or three random replacements each."""
    everything = list(replacements())
    for _ in range(n):
        picks = rng.sample(everything, rng.randint(2, 3))
        route = rng.choice(routes_of(*picks[0][:2]))
        spec = Spec(route, query={k: v for k, v in QUERIES.get(route, {}).items() if rng.random() < 0.5})
        for part, key, value in picks:
            spec = apply(spec, part, key, value)
        yield spec


def check(answer, request: bytes, corrupt: bool, where: str) -> None:
    allowed = ALLOWED | ({500} if corrupt else set())
    assert answer.status in allowed, f"{where}: HTTP {answer.status} {answer.body[:300]!r}\nfor {request[:400]!r}"
    json_answer = answer.headers.get("content-type", "").startswith("application/json")
    if answer.status >= 400 and answer.body and not request.startswith(b"HEAD"):
        if not json_answer:  # only the HTTP layer answers in plain text: uvicorn (bad HTTP), CORS preflight
            assert answer.status == 400, f"{where}: non-JSON {answer.status} {answer.body[:200]!r}"
            return
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and detail and "Traceback" not in detail, f"{where}: {detail!r}"


def test_fuzz_every_endpoint_on_a_real_server(results_copy):
    broken = analyses_folder(results_copy) / "broken"
    broken.mkdir()
    (broken / "features.sqlite").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(8192)))
    settings = {"GPT2DICT_MAX_BODY_BYTES": str(MAX_BODY), "GPT2DICT_MAX_TEXT_CHARS": "300",
                "GPT2DICT_MAX_TEXT_TOKENS": "24", "GPT2DICT_STEER_MAX_NEW_TOKENS": "4",
                "GPT2DICT_STEER_MAX_PROMPT_TOKENS": "16"}
    specs = [("sweep", spec) for spec in sweep()]
    specs += [(f"seed {SEED}", spec) for spec in random_specs(random.Random(SEED), RANDOM_REQUESTS)]
    statuses: dict[int, int] = {}
    answered: list[int] = []
    computed = 0  # custom texts and steering answered 200
    with uvicorn_server(results_copy, settings, log_level="critical") as base:
        httpx.post(f"{base}/api/dictionaries/{DICT}/activations", json={"text": "warm"}, timeout=60).raise_for_status()
        deadline = time.monotonic() + TIME_BUDGET_S
        for n, (source, spec) in enumerate(specs):
            assert time.monotonic() < deadline, f"{n} of {len(specs)} requests in {TIME_BUDGET_S} s"
            request = spec.request()
            answer = raw_http(base, request)
            check(answer, request, spec.corrupt, f"{source}, request {n}")
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            answered.append(answer.status)
            computed += answer.status == 200 and spec.route in ("activations", "steer")
        # Every kind of answer came up, so the requests reach past the validation layer too.
        assert {200, 400, 404, 405, 409, 413, 422, 500} <= set(statuses) and computed > 0, (statuses, computed)
        reached = {spec.route for (_, spec), status in zip(specs, answered) if status == 200}
        # Every endpoint answered some request (an unknown /api path and, without a built UI, "/..." never do).
        assert set(ROUTES) - {"ui", "api"} <= reached, set(ROUTES) - reached

        assert httpx.get(f"{base}/api/health").json()["status"] == "ok"
        ok = httpx.post(f"{base}/api/dictionaries/{DICT}/activations", json={"text": "Hello world", "feature": 3},
                        timeout=60)
        assert ok.status_code == 200 and ok.json()["tokens"] == ["Hello", " world"]


def test_malformed_http_does_not_bring_the_server_down(results_copy):
    requests = [
        b"GARBAGE\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nNo-Colon-Here\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST /api/dictionaries/" + DICT.encode() + b"/activations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: abc\r\n\r\n{}",
        b"POST /api/dictionaries/" + DICT.encode() + b"/activations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /api/health HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS client hello
    ]
    with uvicorn_server(results_copy, log_level="critical") as base:
        for request in requests:
            try:
                answer = raw_http(base, request, timeout=10)
            except (ConnectionError, AssertionError):  # closed without an HTTP answer: fine for garbage
                continue
            assert answer.status < 500, (answer, request[:80])  # an answer, if any, is not a crash
        assert httpx.get(f"{base}/api/health").status_code == 200
