"""Real, small material for the auto-interpretation tests: a dictionary whose features follow known
rules, analyzed by the real analyzer; a real HTTP server that misbehaves on purpose.

The rule dictionary is a ReLU SAE on the tiny GPT-2's token embeddings (`hook_embed`) whose
feature i fires exactly on token RULE_TOKENS[i]: its encoder column is that token's embedding over
its squared norm, with bias -0.6, so the pre-activation is 1 - 0.6 on the token and about
N(0, 0.13) - 0.6 elsewhere (random embeddings of width 64 are nearly orthogonal).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RULE_TOKENS = (" the", " of", ",", " is", " a", " to", ".", " and")
RULE_EXPLANATIONS = ('The word "the"', 'The word "of"', "Commas", 'The word "is"', 'The article "a"', 'The word "to"',
                     "Periods at the end of sentences", 'The word "and"')


def build_rule_dictionary(model_dir: Path, folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core import SAEConfig, create_dictionary

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    embeddings = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight.detach()
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in RULE_TOKENS]
    assert all(len(i) == 1 for i in ids), ids
    rows = embeddings[[i[0] for i in ids]]  # [d_sae, d_model]
    sae = create_dictionary(SAEConfig(architecture="relu", d_sae=len(RULE_TOKENS)), rows.shape[1],
                            hook_name="hook_embed", model_name=str(model_dir))
    with torch.no_grad():
        sae.W_enc.copy_((rows / (rows.norm(dim=1, keepdim=True) ** 2)).T)
        sae.b_enc.fill_(-0.6)
        sae.W_dec.copy_(rows / rows.norm(dim=1, keepdim=True))
        sae.b_dec.zero_()
    return sae.save(folder)


def copy_dictionary(dictionary: Path, where: Path) -> Path:
    """A private copy of a dictionary folder with its analyses (so tests never share explanations)."""
    target = where / "dictionaries" / dictionary.name
    shutil.copytree(dictionary, target)
    return target


class MisbehavingServer:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 whose answers a test scripts.

    `script(path, body, n)` returns (status, headers, body text) for the n-th request (0-based) to a
    path; every request is recorded as (time, path, headers, body)."""

    def __init__(self, script) -> None:
        self.requests: list[tuple[float, str, dict, dict]] = []
        self.script = script
        counts: dict[str, int] = {}
        server = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with lock:
                    n = counts.get(self.path, 0)
                    counts[self.path] = n + 1
                    server.requests.append((time.monotonic(), self.path, dict(self.headers), body))
                status, headers, text = server.script(self.path, body, n)
                data = text.encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_answer(content: str | None, *, prompt_tokens: int = 50, completion_tokens: int = 5) -> str:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}})


def token_reader(path: str, body: dict, n: int) -> tuple[int, dict, str]:
    """A `MisbehavingServer` script answering like a reader who only looks at tokens: asked to explain,
    it names the token marked most often in the excerpts (`The token "x"`); asked about an excerpt, it
    says yes when the token the explanation names is there (detection) or is every marked token
    (fuzzing). Deterministic, so explanations are searchable and scores differ between features."""
    import re
    from collections import Counter

    question = body["messages"][-1]["content"]
    asked = re.match(r"Explanation: (.*)\nExcerpt: (.*)", question, re.S)
    if asked is None:
        marked = Counter(m.strip() or m for m in re.findall(r"<<(.*?)>>", question))
        token = marked.most_common(1)[0][0] if marked else "nothing"
        return 200, {}, chat_answer(f'The token "{token}"')
    explanation, excerpt = asked.groups()
    named = re.search(r'"(.*)"', explanation)
    word = named.group(1) if named else explanation
    if "<<" in excerpt:
        yes = all((m.strip() or m) == word for m in re.findall(r"<<(.*?)>>", excerpt))
    else:
        yes = word in excerpt
    return 200, {}, chat_answer("Yes" if yes else "No")
