"""The item in a chat answer: the first block that carries the exemplar template's fields.

The format comes from ``render.exemplar``: each template line that starts with literal text before
its first ``{{``/``{%`` gives a *head* (``Rating: {{ rating }}`` -> ``Rating:``; a line that is only a
variable, like a function's source, gives none). A block starts at a line beginning with the first
head and must show every head, in order, each at the start of a line. It ends

- at a line that is the separator (``###``), a code fence (```` ``` ````), or the first head again
  (a second example);
- at a blank line, unless the reference items themselves contain blank lines (source code);
- at the end of the answer.

Chatter before the block ("Sure! Here is another review:") and after it is dropped; markdown bold
around a head (``**Rating:** 5``) is undone. The item text is the block, right-trimmed. An answer
with no such block (a refusal, a different format) has no item: :func:`parse_item` returns None.
A template with no head at all has no structure to find: the item is the answer without code
fences, if it is not empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness.taskspec import TaskSpec

_FENCE = re.compile(r"^\s*(```|~~~)")
_TEMPLATE_START = re.compile(r"\{\{|\{%|\{#")


@dataclass(frozen=True)
class ItemFormat:
    """What a block must show: its heads in order, the separator line, whether items hold blank lines."""

    heads: tuple[str, ...]
    separator_line: str = ""
    blank_lines_inside: bool = False


def template_heads(exemplar: str) -> tuple[str, ...]:
    """The literal start of each template line that has one (``Rating: {{ rating }}`` -> ``Rating:``)."""
    heads = []
    for line in exemplar.split("\n"):
        head = _TEMPLATE_START.split(line, maxsplit=1)[0].strip()
        if head:
            heads.append(head)
    return tuple(heads)


def item_format(task: TaskSpec, examples: Sequence[str] = ()) -> ItemFormat:
    """The format of a task's items; ``examples`` (rendered reference items) say whether items hold blank lines."""
    return ItemFormat(template_heads(task.render.exemplar), task.render.separator.strip(),
                      any("\n\n" in text.strip() for text in examples))


def _clean(line: str) -> str:
    """A line with markdown bold undone where it wraps a head (``**Rating:** 5`` -> ``Rating: 5``)."""
    stripped = line.strip()
    return stripped.replace("**", "") if stripped.startswith("**") else line.rstrip()


def _ends_block(line: str, fmt: ItemFormat) -> bool:
    text = line.strip()
    return bool(_FENCE.match(line)) or (bool(fmt.separator_line) and text == fmt.separator_line) or (
        not text and not fmt.blank_lines_inside)


def _block_at(lines: list[str], start: int, fmt: ItemFormat) -> str | None:
    """The block starting at ``lines[start]`` (which begins with the first head), or None if a head is missing."""
    block, want = [lines[start]], 1
    for line in lines[start + 1:]:
        if _ends_block(line, fmt):
            break
        cleaned = _clean(line)
        if cleaned.lstrip().startswith(fmt.heads[0]) and want >= len(fmt.heads):
            break  # the next example
        if want < len(fmt.heads) and cleaned.lstrip().startswith(fmt.heads[want]):
            want += 1
            cleaned = cleaned.lstrip()
        block.append(cleaned)
    if want < len(fmt.heads):
        return None
    return "\n".join(block).rstrip() or None


def parse_item(answer: str, fmt: ItemFormat) -> str | None:
    """The first block of ``answer`` that carries the format's heads in order, or None."""
    if not fmt.heads:
        text = "\n".join(line for line in answer.split("\n") if not _FENCE.match(line)).strip()
        return text or None
    lines = answer.split("\n")
    for i, line in enumerate(lines):
        cleaned = _clean(line).lstrip()
        if cleaned.startswith(fmt.heads[0]):
            lines[i] = cleaned
            block = _block_at(lines, i, fmt)
            if block is not None:
                return block
    return None
