"""Text post-processing shared by the decoder: stop strings and special-token stripping."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int:
    """Index of the earliest stop string in ``text`` at or after ``start``, or -1."""
    hits = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


class SpecialStripper:
    """Removes literal special-token strings (``<eos>``, ``<start_of_turn>``...) from text.

    A base model can spell a control token out of ordinary tokens; the item we measure must not
    contain it either way. Matching checks only positions whose character starts some special
    string, with the few distinct lengths, longest first, so 6000 ``<unusedN>`` strings stay cheap.
    """

    def __init__(self, strings: Iterable[str]):
        self.strings = frozenset(s for s in strings if s)
        self.first_chars = frozenset(s[0] for s in self.strings)
        self.lengths = sorted({len(s) for s in self.strings}, reverse=True)

    def __call__(self, text: str) -> str:
        """Return ``text`` with every special-token string removed."""
        if not self.strings or not any(c in text for c in self.first_chars):
            return text
        out, i, n = [], 0, len(text)
        while i < n:
            if text[i] in self.first_chars:
                for length in self.lengths:
                    if text[i : i + length] in self.strings:
                        i += length
                        break
                else:
                    out.append(text[i])
                    i += 1
            else:
                out.append(text[i])
                i += 1
        result = "".join(out)
        # Removing one string can join the halves of another ("<e<pad>os>"); repeat until stable.
        return result if result == text else self(result)
