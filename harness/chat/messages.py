"""A context rendered as a conversation: system and user messages, and the assistant's prefill.

The templates are a task's ``render.chat`` (system, user, condition: see :data:`harness.tasks.CHAT_VARIABLES`
for what each sees), else the defaults below. The user message shows the rendered exemplars as the
document does (joined by the separator) and asks for one more in exactly that format; for a
``prompt:<v>`` pool it states the condition in words, by default read off the pool's prefix
(``Rating: 5\n`` -> "Its first line must be: Rating: 5"). With prefill the conversation ends with an
assistant message holding the pool's prefix (:mod:`harness.chat.renderings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.mimic import ChatMessage
from harness.tasks import template_env
from harness.taskspec import TaskSpec

DEFAULT_SYSTEM = ("You continue a collection of examples. When asked, you write one new example in exactly the "
                  "format of the examples shown, and nothing else.")
DEFAULT_USER = (
    "{% if preamble %}{{ preamble | trim }}\n\n{% endif %}"
    "{% if n_examples %}{{ 'Here is an example' if n_examples == 1 else 'Here are %d examples' % n_examples }}:\n\n"
    "{{ examples }}\n\n"
    "Write one more example in exactly this format.{% else %}Write one example.{% endif %}"
    "{% if condition %}\n{{ condition }}{% endif %}\nReply with the example only."
)


def condition_sentence(prefix: str) -> str:
    """The default condition in words: the prefix's lines, which the item must start with."""
    lines = prefix.strip("\n").split("\n")
    if not prefix.strip():
        return ""
    if len(lines) == 1:
        return f"Its first line must be: {lines[0].strip()}"
    return "It must begin with these lines:\n" + "\n".join(lines)


def condition_text(task: TaskSpec, prefix: str, value: Any = None) -> str:
    """The condition of a ``prompt:<v>`` pool in words (empty for the ``none`` pool, ``value`` None)."""
    if value is None:
        return ""
    if task.render.chat_condition:
        return template_env().from_string(task.render.chat_condition).render(value=value, prefix=prefix).strip()
    return condition_sentence(prefix)


def chat_messages(task: TaskSpec, exemplars: Sequence[str], prefix: str, value: Any = None,
                  prefill: bool = False) -> tuple[ChatMessage, ...]:
    """The conversation of one context: system, user, and with ``prefill`` an assistant message holding ``prefix``."""
    env = template_env()
    render = task.render
    preamble = env.from_string(render.preamble).render()
    system = env.from_string(render.chat_system or DEFAULT_SYSTEM).render(preamble=preamble, n_examples=len(exemplars))
    user = env.from_string(render.chat_user or DEFAULT_USER).render(
        preamble=preamble, examples=render.separator.join(exemplars), exemplars=list(exemplars),
        n_examples=len(exemplars), separator=render.separator, condition=condition_text(task, prefix, value))
    messages = [ChatMessage("system", system), ChatMessage("user", user)]
    if prefill and prefix:
        messages.append(ChatMessage("assistant", prefix))
    return tuple(messages)
