"""The chat template: how a conversation becomes text for a masked diffusion model.

The default is the BERT-style template the published Diffutron models use (no special tokens, plain
text markers that any tokenizer can encode)::

    [SYS]\\n{system}\\n[/SYS]\\n\\n                 (optional, first message only)
    [Question]\\n{user}\\n[/Question]\\n\\n
    [Answer]\\n{assistant}\\n[/Answer]\\n\\n

The generation prompt is ``[Answer]\\n``; ``[/Answer]`` ends a turn. Message contents are stripped of
surrounding whitespace.

``compact`` (``sft.chat_template: compact``) is the same markers without the newlines, each content
after one space, for a tokenizer that holds the markers as tokens of their own (``CHAT_MARKERS``;
``tokenizer.chat_markers: true`` when a run trains its tokenizer, as the quickstart does)::

    [Question] {user}[/Question][Answer] {assistant}[/Answer]

Why: with a corpus BPE the plain markers cost ~30 tokens per turn, and a word right after a newline
is spelled differently from the same word after a space ("\\nkitap" vs " kitap"). In the compact form
a word of the question is 2 tokens from the answer and every word is spelled the same in both, so a
small model can learn to copy. The published mmBERT path keeps the default.

Each template lives in two forms that give identical strings:

    install_chat_template(tokenizer)              # Jinja, saved with the tokenizer
    tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    format_chat(messages, add_generation_prompt=True)   # the Python twin (fast, no Jinja)

For training, :func:`prompt_and_answer` splits a conversation: everything before the last assistant
message (earlier turns included) is the prompt, the last answer is the target. :func:`extract_answer`
cuts a generated answer at ``[/Answer]``.

What it does not know: tokens. Tokenisation (and the ``<bos>`` a tokenizer may add) is the caller's:
see ``diffutron.data.sft``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "ANSWER_END",
    "CHAT_MARKERS",
    "COMPACT_CHAT_TEMPLATE",
    "DEFAULT_CHAT_TEMPLATE",
    "GENERATION_PROMPT",
    "ROLES",
    "check_messages",
    "extract_answer",
    "NAMED_TEMPLATES",
    "add_chat_markers",
    "format_chat",
    "format_compact",
    "install_chat_template",
    "prompt_and_answer",
    "render_with",
]

ROLES = ("system", "user", "assistant")
GENERATION_PROMPT = "[Answer]\n"
ANSWER_END = "[/Answer]"
_TURN = {
    "system": ("[SYS]\n", "\n[/SYS]\n\n"),
    "user": ("[Question]\n", "\n[/Question]\n\n"),
    "assistant": ("[Answer]\n", "\n[/Answer]\n\n"),
}
_COMPACT_TURN = {
    "system": ("[SYS] ", "[/SYS]"),
    "user": ("[Question] ", "[/Question]"),
    "assistant": ("[Answer] ", "[/Answer]"),
}
#: the markers of both templates, as a tokenizer adds them when it holds them as tokens of their own
CHAT_MARKERS = ("[SYS]", "[/SYS]", "[Question]", "[/Question]", "[Answer]", "[/Answer]")

# Every piece of output is an explicit string literal and every tag trims whitespace around it, so the
# rendering does not depend on the Jinja environment's trim_blocks / lstrip_blocks settings.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' and loop.first -%}"
    "{{- '[SYS]\\n' + (message['content'] | trim) + '\\n[/SYS]\\n\\n' -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '[Question]\\n' + (message['content'] | trim) + '\\n[/Question]\\n\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '[Answer]\\n' + (message['content'] | trim) + '\\n[/Answer]\\n\\n' -}}"
    "{%- else -%}"
    "{{- raise_exception('roles are system (first message only), user and assistant') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '[Answer]\\n' -}}{%- endif -%}"
)
COMPACT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' and loop.first -%}"
    "{{- '[SYS] ' + (message['content'] | trim) + '[/SYS]' -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '[Question] ' + (message['content'] | trim) + '[/Question]' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '[Answer] ' + (message['content'] | trim) + '[/Answer]' -}}"
    "{%- else -%}"
    "{{- raise_exception('roles are system (first message only), user and assistant') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '[Answer]' -}}{%- endif -%}"
)
#: named templates (``sft.chat_template``) -> Jinja
NAMED_TEMPLATES = {"diffutron": DEFAULT_CHAT_TEMPLATE, "compact": COMPACT_CHAT_TEMPLATE}


def check_messages(messages: Sequence[dict[str, Any]]) -> None:
    """Raise ``ValueError`` unless ``messages`` is a list of {role, content} with known roles and a
    system message, if any, first."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise ValueError(
            f"messages must be a list of {{role, content}} mappings, got {type(messages).__name__}"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a mapping with 'role' and 'content', got {m!r}")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i}: unknown role {m['role']!r}; roles are {ROLES}")
        if m["role"] == "system" and i != 0:
            raise ValueError(f"message {i}: a system message may only come first")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i}: content must be a string, got {type(m['content']).__name__}")


def format_chat(
    messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False, *, compact: bool = False
) -> str:
    """The default (or, ``compact=True``, the compact) template in Python: identical to
    ``apply_chat_template(..., tokenize=False)`` with :data:`DEFAULT_CHAT_TEMPLATE` (or
    :data:`COMPACT_CHAT_TEMPLATE`) installed."""
    check_messages(messages)
    turns = _COMPACT_TURN if compact else _TURN
    parts = []
    for m in messages:
        opening, closing = turns[m["role"]]
        parts.append(opening + m["content"].strip() + closing)
    if add_generation_prompt:
        parts.append("[Answer]" if compact else GENERATION_PROMPT)
    return "".join(parts)


def format_compact(messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    """:func:`format_chat` with the compact template."""
    return format_chat(messages, add_generation_prompt, compact=True)


def install_chat_template(tokenizer: Any, template: str | None = None) -> str:
    """Store ``template`` (default: the Diffutron template; a name of :data:`NAMED_TEMPLATES` or a
    Jinja string) as ``tokenizer.chat_template``, so ``apply_chat_template`` works and
    ``save_pretrained`` keeps it. Returns the template."""
    template = template or DEFAULT_CHAT_TEMPLATE
    tokenizer.chat_template = NAMED_TEMPLATES.get(template, template)
    return tokenizer.chat_template


def add_chat_markers(tokenizer: Any) -> list[str]:
    """Make each of :data:`CHAT_MARKERS` one token of ``tokenizer`` (ordinary added tokens: decoding
    keeps them, so ``extract_answer`` still finds ``[/Answer]``). Returns the tokens that grew the
    vocabulary; a model must then ``resize_token_embeddings(len(tokenizer))``."""
    new = [m for m in CHAT_MARKERS if m not in tokenizer.get_vocab()]
    tokenizer.add_tokens(new)
    return new


def render_with(tokenizer: Any | None, template: str) -> Callable[[Sequence[dict], bool], str]:
    """A ``(messages, add_generation_prompt) -> str`` renderer for a template setting:
    ``diffutron`` (the default) or ``compact`` (both rendered in Python), ``tokenizer`` (the
    tokenizer's own template) or a Jinja string (rendered by ``transformers``)."""
    if template == "diffutron" or template == DEFAULT_CHAT_TEMPLATE:
        return format_chat
    if template == "compact" or template == COMPACT_CHAT_TEMPLATE:
        return format_compact
    if tokenizer is None:
        raise ValueError("a tokenizer is needed to render a template other than the default")
    jinja = tokenizer.chat_template if template == "tokenizer" else template
    if not jinja:
        raise ValueError("chat_template: tokenizer, but the tokenizer has no chat template")

    def render(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        check_messages(messages)
        return tokenizer.apply_chat_template(
            list(messages), chat_template=jinja, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    return render


def prompt_and_answer(
    messages: Sequence[dict[str, Any]], render: Callable[[Sequence[dict], bool], str] = format_chat
) -> tuple[str, str]:
    """Split a conversation ending in an assistant message into (prompt text, answer text).

    The prompt is every earlier message rendered with the generation prompt (what a user's client
    sends at inference); the answer is the rest of the full rendering (``{content}\\n[/Answer]\\n\\n``
    with the default template), so the model also learns to close its turn.
    """
    check_messages(messages)
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a training conversation must end with an assistant message (the target)")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise ValueError("a training conversation needs a user message before the answer")
    prompt = render(messages[:-1], True)
    full = render(messages, False)
    if not full.startswith(prompt):
        raise ValueError(
            "the chat template renders the prompt differently inside the full conversation; "
            "a template for training must render a prefix of the conversation as its prefix"
        )
    return prompt, full[len(prompt) :]


def extract_answer(generated: str) -> str:
    """The answer in generated text: everything before ``[/Answer]`` (or all of it), stripped."""
    return generated.split(ANSWER_END, 1)[0].strip()
