"""Merge runs into leaderboards and comparisons.

- :func:`load_runs` (``runs``): run directories -> :class:`harness.protocols.LeaderboardData`.
- :func:`build_document` (``document``): the versioned document every writer renders.
- ``score``: the synchronisation score and ranking; ``compare``: paired differences of two models.
- writers: ``markdown``, ``jsonout``, ``site`` (registered by ``harness.builtin.writers``).
"""

from harness.leaderboard.document import SCHEMA_VERSION, build_document
from harness.leaderboard.runs import load_runs

__all__ = ["SCHEMA_VERSION", "build_document", "load_runs"]
