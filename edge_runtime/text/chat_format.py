"""The BitNet b1.58 2B4T chat format.

    <|begin_of_text|>System: {sys}<|eot_id|>User: {msg}<|eot_id|>Assistant: {reply}<|eot_id|>...

ending with the "Assistant: " header (trailing space included) for the reply. At the token level the model's own encoder tokenizes each role header ("User: ", with its
trailing space) and the stripped message content SEPARATELY and concatenates them, then
appends <|eot_id|>. Tokenizing the whole line as one string gives different ids (the
header's trailing space would join the first word), so that is not done here.
Content is tokenized with special=False: a '<|eot_id|>' typed by a user stays plain text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edge_runtime.text.tokenizer import Tokenizer

__all__ = ["ROLE_HEADERS", "encode_chat", "render_chat_text", "validate_messages"]

ROLE_HEADERS = {"system": "System: ", "user": "User: ", "assistant": "Assistant: "}

_BEGIN_OF_TEXT = "<|begin_of_text|>"
_END_OF_TURN = "<|eot_id|>"


def validate_messages(messages) -> list[tuple[str, str]]:
    """(role, content) pairs of `messages`, or ValueError naming the bad message and field."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    pairs = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{index}] must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLE_HEADERS:
            raise ValueError(
                f"messages[{index}]['role'] = {role!r}; expected one of 'system', 'user', 'assistant'"
            )
        content = message.get("content")
        if not isinstance(content, str):
            raise ValueError(
                f"messages[{index}]['content'] must be a string, got {type(content).__name__}"
            )
        pairs.append((role, content))
    return pairs


def encode_chat(
    tokenizer: Tokenizer, messages: list[dict], add_generation_prompt: bool = True,
    known_replies: dict | None = None,
) -> list[int]:
    """Token ids of a conversation, ending with the "Assistant: " header for the reply.

    known_replies maps an assistant reply's stripped text to the token ids the model generated for
    it: those ids are used instead of re-tokenizing the text (which may split differently), so the
    next turn's prompt extends exactly what is already in the KV cache."""
    pairs = validate_messages(messages)
    if tokenizer.bos_id is None or tokenizer.eot_id is None:
        raise ValueError(
            "tokenizer: the chat format needs a bos token (<|begin_of_text|>) and an "
            "end-of-turn token (<|eot_id|>)"
        )
    ids = [tokenizer.bos_id]
    for role, content in pairs:
        ids += tokenizer.encode(ROLE_HEADERS[role])
        text = content.strip()
        if role == "assistant" and known_replies and text in known_replies:
            ids += list(known_replies[text])
        else:
            ids += tokenizer.encode(text)
        ids.append(tokenizer.eot_id)
    if add_generation_prompt:
        ids += tokenizer.encode(ROLE_HEADERS["assistant"])
    return ids


def render_chat_text(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The same conversation as display text."""
    pairs = validate_messages(messages)
    parts = [_BEGIN_OF_TEXT]
    for role, content in pairs:
        parts += [ROLE_HEADERS[role], content.strip(), _END_OF_TURN]
    if add_generation_prompt:
        parts.append(ROLE_HEADERS["assistant"])
    return "".join(parts)
