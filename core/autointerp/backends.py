"""Language models that explain features and answer the scorers' yes/no questions.

Two backends behind one face (`Backend`: `generate` for explanations, `judge` for yes/no questions):

- `LocalBackend`: a Hugging Face causal LM in this process (default: the offline SmolLM2-135M-Instruct,
  converted once by `core.lm`). Prompts are batched: each batch is one `generate` (or, for yes/no, one
  forward) over prompts padded on the left of their own part. The shared part of the prompts (system
  message and worked example, `Prompt.shared`) is run once per backend and its KV cache reused by
  every batch: the padding sits between the cached prefix and each prompt's own tokens, masked out,
  with position ids counting only real tokens, so every row sees exactly the tokens it would alone.
  Yes/no probabilities come from the next-token logits: P(yes) = p(yes tokens) / (p(yes) + p(no)).
- `OpenAIBackend`: any OpenAI-compatible chat-completions server through the `openai` client:
  bounded concurrency (threads), timeouts, retries with exponential backoff on connection errors,
  429 and 5xx (the client's own, honouring Retry-After). The key comes from the environment and is
  held only by the client. Yes/no probabilities from `top_logprobs` where the server gives them,
  or from `transformers serve`'s `/v1/systemone` endpoint (`BackendConfig.probabilities`).

A response that cannot be read (malformed JSON, no message, an empty answer) comes back as a
`Completion` / `Judgement` with no text / answer and the raw response, never as an error; a server
that cannot be reached or keeps refusing raises `BackendError` after the retries.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import logging
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..config import LanguageModelConfig, resolve_device, torch_dtype
from ..errors import BackendError, ConfigError, ModelLoadError
from .config import BackendConfig
from .prompts import NO_WORDS, YES_WORDS, Prompt, parse_yes_no

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20
"""Alternatives asked for per token when reading yes/no probabilities from logprobs."""
JUDGE_MAX_TOKENS = 3
"""Tokens a server may generate for a yes/no answer (some emit a space or quote first)."""


@dataclass(frozen=True)
class Completion:
    text: Optional[str]
    """The generated answer; None when the response could not be read."""
    raw: str
    """The raw response: the generated text (local) or the HTTP body (server)."""
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Judgement:
    answer: Optional[bool]
    """Yes (True) or No (False); None when the answer could not be read."""
    p_yes: Optional[float]
    """P(yes) / (P(yes) + P(no)) of the first answer token; None when the backend cannot tell."""
    raw: str
    prompt_tokens: int
    completion_tokens: int


class Backend(ABC):
    """A language model answering prompts; use as a context manager (or call `close`)."""

    model_name: str
    """The model's name as recorded with the results."""

    @property
    def settings(self) -> dict[str, Any]:
        """What identifies this backend's answers in the settings of an explanation or score set."""
        return {"kind": "local" if isinstance(self, LocalBackend) else "openai", "model": self.model_name}

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0) -> list[Completion]:
        """One completion per prompt, in order."""

    @abstractmethod
    def judge(self, prompts: Sequence[Prompt]) -> list[Judgement]:
        """One yes/no answer per prompt, in order."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_backend(config: BackendConfig, *, api_key: Optional[str] = None) -> Backend:
    """The backend `config` describes (`api_key` overrides the environment variable it names)."""
    config.validate()
    return LocalBackend(config) if config.kind == "local" else OpenAIBackend(config, api_key=api_key)


def _yes_no_probability(p_yes: float, p_no: float) -> Optional[float]:
    return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None


# ----------------------------------------------------------------------------------------------
# Local Hugging Face model


class LocalBackend(Backend):
    """A Hugging Face causal LM with a chat template, run in this process (see the module docstring)."""

    def __init__(self, config: BackendConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..lm import resolve_model_source

        self.config = config
        self.model_name = config.model_name
        folder = resolve_model_source(LanguageModelConfig(name=self.model_name, cache_dir=config.cache_dir))
        self.device = torch.device(resolve_device(config.device))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(config.dtype))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"Could not load the explainer model {self.model_name!r} ({str(e).splitlines()[0][:200]}); "
                                 "give a local Hugging Face folder of a chat model, or leave backend.model unset for "
                                 "the offline SmolLM2-135M-Instruct.") from e
        if self.tokenizer.chat_template is None:
            raise ModelLoadError(f"{self.model_name!r} has no chat template; use an instruction-tuned (chat) model.")
        self.model.to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.yes_ids = self._word_token_ids(YES_WORDS)
        self.no_ids = self._word_token_ids(NO_WORDS)
        self._prefixes: dict[tuple[int, ...], Any] = {}  # prefix token ids -> its KV cache (batch 1)

    def _word_token_ids(self, words: Sequence[str]) -> list[int]:
        """Single tokens that spell one of `words` (any case, with or without a leading space)."""
        ids = set()
        for word in words:
            for form in (word, word.capitalize(), word.upper(), " " + word, " " + word.capitalize()):
                tokens = self.tokenizer(form, add_special_tokens=False)["input_ids"]
                if len(tokens) == 1:
                    ids.add(tokens[0])
        if not ids:
            raise ModelLoadError(f"The tokenizer of {self.model_name!r} has no single token for {words[0]!r}; "
                                 "yes/no answers cannot be read from its logits.")
        return sorted(ids)

    # -- tokenizing with a shared prefix ---------------------------------------------------

    def _split(self, prompt: Prompt) -> tuple[tuple[int, ...], list[int]]:
        """(prefix ids, own ids): the chat-templated prompt cut after its shared messages, when the
        template renders them as a prefix of the whole (else no prefix)."""
        full = self.tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(full, add_special_tokens=False)["input_ids"]
        if prompt.shared and self.config.prefix_cache:
            shared = [{"role": r, "content": c} for r, c in prompt.shared]
            head = self.tokenizer.apply_chat_template(shared, tokenize=False)
            head_ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
            if full.startswith(head) and ids[:len(head_ids)] == head_ids and len(head_ids) < len(ids):
                return tuple(head_ids), ids[len(head_ids):]
        return (), ids

    def _prefix_cache(self, prefix: tuple[int, ...]):
        import torch

        if prefix not in self._prefixes:
            with torch.no_grad():
                out = self.model(torch.tensor([prefix], device=self.device), use_cache=True)
            self._prefixes[prefix] = out.past_key_values
        return self._prefixes[prefix]

    def _batches(self, prompts: Sequence[Prompt]):
        """(indices, prefix, own ids per prompt) batches: prompts grouped by prefix, sorted by length
        (less padding), at most batch_size each. The order depends only on the prompts."""
        split = [self._split(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: (split[i][0], len(split[i][1]), i))
        batch: list[int] = []
        for i in order:
            if batch and (split[batch[0]][0] != split[i][0] or len(batch) == self.config.batch_size):
                yield batch, split[batch[0]][0], [split[j][1] for j in batch]
                batch = []
            batch.append(i)
        if batch:
            yield batch, split[batch[0]][0], [split[j][1] for j in batch]

    def _inputs(self, prefix: tuple[int, ...], own: list[list[int]]):
        """input_ids [B, P + L] (prefix, left padding, own tokens), attention_mask [B, P + L] and the
        prefix cache repeated B times (None without a prefix)."""
        import torch

        width = max(map(len, own))
        ids = torch.full((len(own), len(prefix) + width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        if prefix:
            ids[:, :len(prefix)] = torch.tensor(prefix)
            mask[:, :len(prefix)] = 1
        for row, tokens in enumerate(own):
            ids[row, ids.shape[1] - len(tokens):] = torch.tensor(tokens)
            mask[row, ids.shape[1] - len(tokens):] = 1
        cache = None
        if prefix:
            cache = copy.deepcopy(self._prefix_cache(prefix))
            cache.batch_repeat_interleave(len(own))
        return ids.to(self.device), mask.to(self.device), cache

    # -- the two questions -----------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0) -> list[Completion]:
        import torch

        out: list[Optional[Completion]] = [None] * len(prompts)
        for indices, prefix, own in self._batches(prompts):
            ids, mask, cache = self._inputs(prefix, own)
            sampling = dict(do_sample=True, temperature=temperature) if temperature > 0 else dict(do_sample=False)
            if temperature > 0:
                torch.manual_seed(seed + indices[0])
            with torch.no_grad():
                generated = self.model.generate(input_ids=ids, attention_mask=mask, cache=cache,
                                                max_new_tokens=max_new_tokens, pad_token_id=self.pad_id,
                                                top_p=None, top_k=None, **sampling)
            for row, i in enumerate(indices):
                new = generated[row, ids.shape[1]:].tolist()
                n_new = next((k + 1 for k, t in enumerate(new) if t == self.tokenizer.eos_token_id), len(new))
                text = self.tokenizer.decode(new[:n_new], skip_special_tokens=True)
                out[i] = Completion(text=text, raw=text, prompt_tokens=len(prefix) + len(own[row]),
                                    completion_tokens=n_new)
        return out  # type: ignore[return-value]

    def judge(self, prompts: Sequence[Prompt]) -> list[Judgement]:
        import torch

        out: list[Optional[Judgement]] = [None] * len(prompts)
        for indices, prefix, own in self._batches(prompts):
            ids, mask, cache = self._inputs(prefix, own)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = self.model(input_ids=ids[:, len(prefix):], attention_mask=mask, cache=cache,
                                    position_ids=positions[:, len(prefix):], logits_to_keep=1).logits[:, -1]
            probs = logits.float().softmax(-1)
            p_yes, p_no = probs[:, self.yes_ids].sum(-1).tolist(), probs[:, self.no_ids].sum(-1).tolist()
            top = self.tokenizer.convert_ids_to_tokens(probs.argmax(-1).tolist())
            for row, i in enumerate(indices):
                p = _yes_no_probability(p_yes[row], p_no[row])
                raw = json.dumps({"top_token": top[row], "p_yes_token": p_yes[row], "p_no_token": p_no[row]})
                out[i] = Judgement(answer=None if p is None else p >= 0.5, p_yes=p, raw=raw,
                                   prompt_tokens=len(prefix) + len(own[row]), completion_tokens=1)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._prefixes.clear()


# ----------------------------------------------------------------------------------------------
# OpenAI-compatible server


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat-completions server (see the module docstring)."""

    def __init__(self, config: BackendConfig, *, api_key: Optional[str] = None) -> None:
        try:
            import openai
        except ImportError as e:
            raise ConfigError("backend.kind 'openai' needs the openai package: pip install openai.") from e
        self.config = config
        self.model_name = config.model_name
        self.base_url = (config.base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")
        if not self.base_url:
            raise ConfigError("backend.base_url is not set (nor $OPENAI_BASE_URL); give the server's API root, e.g. "
                              "http://127.0.0.1:8000/v1.")
        self._openai = openai
        # Servers without authentication accept any key, but the client refuses an empty one.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or os.environ.get(config.api_key_env) or "none",
                                     timeout=config.timeout_s, max_retries=config.max_retries)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=config.concurrency,
                                                           thread_name_prefix="autointerp-http")

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "probabilities": self.config.probabilities}

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model_name!r})"

    def _map(self, fn, prompts: Sequence[Prompt]) -> list:
        futures = [self._pool.submit(fn, p) for p in prompts]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _post(self, path: str, body: dict[str, Any]) -> str:
        """POST `body` to `<base_url><path>`; the raw response text. Retries are the client's;
        what is still failing after them becomes one BackendError."""
        import httpx

        openai = self._openai
        try:
            response = self._client.post(path, body=body, cast_to=httpx.Response)
            return response.text
        except openai.APIStatusError as e:
            body_text = (e.response.text or "").strip().replace("\n", " ")[:200]
            hint = {401: f"check the API key in ${self.config.api_key_env}", 403: f"check the API key in ${self.config.api_key_env}",
                    404: "check backend.base_url and backend.model (GET <base_url>/models lists the models)",
                    429: "the server is rate-limiting: lower backend.concurrency or wait"}.get(
                e.status_code, "check the server's log")
            raise BackendError(f"The server at {self.base_url} answered {e.status_code} to {path} for model "
                               f"{self.model_name!r} after {self.config.max_retries} retries ({body_text}); {hint}.") from None
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            raise BackendError(f"No answer from the server at {self.base_url} ({type(e).__name__}) after "
                               f"{self.config.max_retries} retries; check that it is running and that backend.base_url "
                               "is right.") from None

    def _chat(self, prompt: Prompt, **params) -> tuple[Optional[dict], str, int, int]:
        """(the first choice, or None when unreadable; the raw body; prompt and completion tokens)."""
        raw = self._post("/chat/completions", {"model": self.model_name, "messages": prompt.messages, **params})
        try:
            body = json.loads(raw)
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError):
            return None, raw, _estimate_tokens(prompt), 0
        if not prompt_tokens:  # servers that report no usage: about 4 characters per token
            prompt_tokens = _estimate_tokens(prompt)
        return (choice if isinstance(choice, dict) else None), raw, prompt_tokens, completion_tokens

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0) -> list[Completion]:
        params: dict[str, Any] = {"max_tokens": max_new_tokens, "temperature": temperature}
        if temperature > 0:
            params["seed"] = seed

        def one(prompt: Prompt) -> Completion:
            choice, raw, n_in, n_out = self._chat(prompt, **params)
            text = _message_text(choice)
            if text is not None and not n_out:
                n_out = max(1, len(text) // 4)
            return Completion(text=text, raw=raw, prompt_tokens=n_in, completion_tokens=n_out)

        return self._map(one, prompts)

    def judge(self, prompts: Sequence[Prompt]) -> list[Judgement]:
        if self.config.probabilities == "systemone":
            return self._map(self._judge_systemone, prompts)
        params: dict[str, Any] = {"max_tokens": JUDGE_MAX_TOKENS, "temperature": 0.0}
        if self.config.probabilities == "logprobs":
            params.update(logprobs=True, top_logprobs=TOP_LOGPROBS)

        def one(prompt: Prompt) -> Judgement:
            choice, raw, n_in, n_out = self._chat(prompt, **params)
            text = _message_text(choice)
            answer = parse_yes_no(text)
            p = _logprobs_yes(choice) if choice is not None else None
            if answer is None and p is not None and text is not None:
                answer = p >= 0.5
            return Judgement(answer=answer, p_yes=p, raw=raw, prompt_tokens=n_in, completion_tokens=n_out or 1)

        return self._map(one, prompts)

    def _judge_systemone(self, prompt: Prompt) -> Judgement:
        """`transformers serve`'s /v1/systemone: a `noul` (yes/no) question whose state is the whole
        conversation as text; the server reads P(Yes) from the next-token logits."""
        messages = prompt.messages
        state = "\n\n".join(m["content"] if m["role"] != "assistant" else f"Answer: {m['content']}" for m in messages)
        raw = self._post("/systemone", {"model": self.model_name, "state": state,
                                        "questions": {"answer": {"type": "noul"}}})
        try:
            body = json.loads(raw)
            p = float(body["answers"]["answer"]["noul"])
            n_in = int((body.get("usage") or {}).get("input_tokens") or 0) or _estimate_tokens(prompt)
        except (ValueError, KeyError, TypeError):
            return Judgement(None, None, raw, _estimate_tokens(prompt), 0)
        if not math.isfinite(p):
            return Judgement(None, None, raw, n_in, 0)
        return Judgement(answer=p >= 0.5, p_yes=p, raw=raw, prompt_tokens=n_in, completion_tokens=0)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()


def _estimate_tokens(prompt: Prompt) -> int:
    return max(1, sum(len(m["content"]) for m in prompt.messages) // 4)


def _message_text(choice: Optional[dict]) -> Optional[str]:
    if not isinstance(choice, dict):
        return None
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) and content.strip() else None


def _logprobs_yes(choice: dict) -> Optional[float]:
    """P(yes) / (P(yes) + P(no)) over the top alternatives of the first answer token that is not
    blank, from a chat completion's `logprobs.content`; None without logprobs."""
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(content, list):
        return None
    for entry in content:
        if not isinstance(entry, dict) or not str(entry.get("token", "")).strip():
            continue
        p_yes = p_no = 0.0
        for alt in entry.get("top_logprobs") or [entry]:
            word = parse_yes_no(str(alt.get("token", "")))
            if word is None:
                continue
            probability = math.exp(float(alt.get("logprob", -math.inf)))
            p_yes, p_no = (p_yes + probability, p_no) if word else (p_yes, p_no + probability)
        return _yes_no_probability(p_yes, p_no)
    return None


__all__ = ["Backend", "Completion", "Judgement", "LocalBackend", "OpenAIBackend", "open_backend"]
