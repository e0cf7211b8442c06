"""The prompts of auto-interpretation and the parsers of their answers.

Prompts are chat messages. Each has a `shared` part, the same for every prompt of its kind (the
system message and one worked example), and a per-feature part; backends that can reuse a computed
prefix (the local backend's KV cache, a server's prefix cache) reuse the shared part.

A context is shown as one line of text (newlines as the two characters `\\n`). The explainer sees the
tokens a feature fires on marked `<<like this>>` (neighbouring marked tokens share one pair), and
below each context the marked tokens with their strength on a 1-10 scale of the feature's largest
activation in the analysis. The scorers ask one yes/no question per context, so that a small model
can answer and its yes/no probability can be read.

`PROMPT_VERSION` changes whenever a prompt's text or a parser's rule changes: results of different
versions form different explanation / score sets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

PROMPT_VERSION = 1
MARK_OPEN, MARK_CLOSE = "<<", ">>"
MAX_EXPLANATION_CHARS = 160
"""A parsed explanation is cut to its first sentence, then to whole words, beyond this length."""
MARK_THRESHOLD = 0.3
"""Tokens at or above this fraction of a context's largest activation are marked (delphi's 0.3)."""
MAX_LEVELS_LISTED = 5
"""Marked tokens listed with their strength under each context shown to the explainer."""

Message = dict[str, str]


@dataclass(frozen=True)
class Prompt:
    shared: tuple[tuple[str, str], ...]
    """(role, content) messages every prompt of this kind starts with."""
    own: tuple[tuple[str, str], ...]
    """(role, content) messages of this prompt; the last is the user's."""

    @property
    def messages(self) -> list[Message]:
        """The whole conversation as chat-completion messages."""
        return [{"role": role, "content": content} for role, content in self.shared + self.own]


# ----------------------------------------------------------------------------------------------
# Showing contexts


def marked_positions(acts: Sequence[float], threshold: float) -> list[int]:
    """Positions whose activation is positive and at least `threshold` times the context's largest
    (delphi's highlighting rule, `delphi/scorers/classifier/sample.py: _prepare_text`)."""
    top = max(acts, default=0.0)
    if top <= 0:
        return []
    return [i for i, a in enumerate(acts) if a > 0 and a >= threshold * top]


def _clean(token: str) -> str:
    return token.replace("\r", "").replace("\n", "\\n").replace("\t", " ")


def render_context(tokens: Sequence[str], marked: Sequence[int] = ()) -> str:
    """The context as one line, the `marked` positions between << and >> (runs share one pair)."""
    marked_set = set(marked)
    out = []
    for i, token in enumerate(tokens):
        if i in marked_set and i - 1 not in marked_set:
            out.append(MARK_OPEN)
        out.append(_clean(token))
        if i in marked_set and i + 1 not in marked_set:
            out.append(MARK_CLOSE)
    return "".join(out).strip()


def activation_levels(tokens: Sequence[str], acts: Sequence[float], marked: Sequence[int], max_act: float) -> str:
    """The strongest marked tokens with their strength 1-10 (10: the feature's largest activation)."""
    strongest = sorted(marked, key=lambda i: -acts[i])[:MAX_LEVELS_LISTED]
    scale = max_act if max_act > 0 else max(acts, default=1.0) or 1.0
    levels = [f'"{_clean(tokens[i]).strip() or _clean(tokens[i])}" {min(10, max(1, math.ceil(10 * acts[i] / scale)))}'
              for i in sorted(strongest)]
    return ", ".join(levels)


# ----------------------------------------------------------------------------------------------
# Explainer

EXPLAINER_SYSTEM = (
    "You study one feature of a language model: a detector that fires on some tokens of a text. You see "
    "excerpts where it fires. The tokens it fires on are between << and >>, and the line under each excerpt "
    "gives their strength from 1 (weak) to 10 (strongest). Say in one short phrase what the feature "
    "detects: the kind of token, and the context when it matters. Reply with the phrase only, on one line, "
    "without << >>.")
_EXPLAINER_EXAMPLE_USER = (
    "Excerpt 1: from os.path <<import>> join\n"
    'Strength: "import" 10\n'
    "Excerpt 2: you can <<import>> the module\n"
    'Strength: "import" 7\n'
    "Excerpt 3: packages are <<imported>> once\n"
    'Strength: "imported" 4')
_EXPLAINER_EXAMPLE_ANSWER = 'The word "import" and its forms, mostly in Python import statements'


def explainer_prompt(contexts: Sequence[tuple[Sequence[str], Sequence[float]]], max_act: float,
                     threshold: float) -> Prompt:
    """The prompt asking for an explanation of a feature from its `contexts` ((tokens, activations)
    pairs, strongest first); `max_act` is the feature's largest activation in the analysis."""
    lines = []
    for n, (tokens, acts) in enumerate(contexts, 1):
        marked = marked_positions(acts, threshold)
        lines.append(f"Excerpt {n}: {render_context(tokens, marked)}")
        lines.append(f"Strength: {activation_levels(tokens, acts, marked, max_act)}")
    shared = (("system", EXPLAINER_SYSTEM), ("user", _EXPLAINER_EXAMPLE_USER),
              ("assistant", _EXPLAINER_EXAMPLE_ANSWER))
    return Prompt(shared, (("user", "\n".join(lines)),))


_PREFIX = re.compile(r"^(?:explanation|answer|feature|phrase|description)\s*[:\-]\s*", re.IGNORECASE)
_LIST_MARK = re.compile(r"^(?:[-*•]\s+|\d+[.)]\s+)")


def parse_explanation(text: Optional[str]) -> Optional[str]:
    """The explanation in a model's answer: its first non-empty line without a label ("Explanation:"),
    list marks, markdown emphasis, enclosing quotes or << >> marks, cut to MAX_EXPLANATION_CHARS. None
    when nothing usable is left (empty, no letters, fewer than 3 characters)."""
    if not text:
        return None
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = _LIST_MARK.sub("", line)
    line = _PREFIX.sub("", line.replace("**", "").replace("__", "")).strip()
    line = line.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
        line = line[1:-1].strip()
    line = re.sub(r"\s+", " ", line)
    if len(line) < 3 or not any(c.isalpha() for c in line):
        return None
    if len(line) > MAX_EXPLANATION_CHARS:
        sentence = re.match(r"(.+?[.!?])(\s|$)", line)
        if sentence and len(sentence.group(1)) <= MAX_EXPLANATION_CHARS:
            line = sentence.group(1)
        else:
            line = line[:MAX_EXPLANATION_CHARS].rsplit(" ", 1)[0].rstrip(",;:")
    return line


# ----------------------------------------------------------------------------------------------
# Scorers: one yes/no question per context

DETECTION_SYSTEM = (
    "A feature of a language model fires on certain text, as its explanation says. You see the explanation "
    "and one excerpt. Answer Yes if the excerpt contains what the explanation describes, otherwise No. "
    "Answer with one word: Yes or No.")
_DETECTION_EXAMPLES = (
    ("Explanation: The word \"import\" in Python import statements\nExcerpt: from os.path import join as j", "Yes"),
    ("Explanation: The word \"import\" in Python import statements\nExcerpt: the river flows into the sea", "No"),
)
FUZZING_SYSTEM = (
    "A feature of a language model fires on certain tokens, as its explanation says. In the excerpt, some "
    "tokens are marked between << and >>. Answer Yes if the marked tokens are ones the explanation "
    "describes, otherwise No. Answer with one word: Yes or No.")
_FUZZING_EXAMPLES = (
    ("Explanation: The word \"import\" in Python import statements\nExcerpt: from os.path <<import>> join", "Yes"),
    ("Explanation: The word \"import\" in Python import statements\nExcerpt: from <<os>>.path import join", "No"),
)


def _with_examples(system: str, examples: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    shared = [("system", system)]
    for question, answer in examples:
        shared += [("user", question), ("assistant", answer)]
    return tuple(shared)


def detection_prompt(explanation: str, tokens: Sequence[str]) -> Prompt:
    """Does the (unmarked) context fit the explanation?"""
    return Prompt(_with_examples(DETECTION_SYSTEM, _DETECTION_EXAMPLES),
                  (("user", f"Explanation: {explanation}\nExcerpt: {render_context(tokens)}"),))


def fuzzing_prompt(explanation: str, tokens: Sequence[str], marked: Sequence[int]) -> Prompt:
    """Do the marked tokens of the context fit the explanation?"""
    return Prompt(_with_examples(FUZZING_SYSTEM, _FUZZING_EXAMPLES),
                  (("user", f"Explanation: {explanation}\nExcerpt: {render_context(tokens, marked)}"),))


YES_WORDS = ("yes", "true")
NO_WORDS = ("no", "false")


def parse_yes_no(text: Optional[str]) -> Optional[bool]:
    """True / False for an answer starting with yes / no (any case, after quotes, brackets or
    markdown); None otherwise."""
    if not text:
        return None
    word = re.match(r"[\s\"'`*\[(]*([A-Za-z]+)", text)
    if word is None:
        return None
    word = word.group(1).lower()
    return True if word in YES_WORDS else False if word in NO_WORDS else None


__all__ = ["PROMPT_VERSION", "Prompt", "activation_levels", "detection_prompt", "explainer_prompt", "fuzzing_prompt",
           "marked_positions", "MARK_THRESHOLD", "parse_explanation", "parse_yes_no", "render_context", "MAX_EXPLANATION_CHARS"]
