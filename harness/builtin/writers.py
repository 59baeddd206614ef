"""Built-in leaderboard writers: ``markdown`` (leaderboard.md), ``json`` (leaderboard.json, JSON
Schema ``harness/leaderboard/schema.json``) and ``html`` (a static site that opens from disk).

Each factory is ``factory(options, ctx)``; the one option all three take is ``filename`` (not for
``html``, which writes ``index.html`` and a page per task and model).
"""

from __future__ import annotations

from harness.hookspecs import hookimpl


def _markdown(options, ctx):
    from harness.leaderboard.markdown import MarkdownWriter

    return MarkdownWriter(options)


def _json(options, ctx):
    from harness.leaderboard.jsonout import JsonWriter

    return JsonWriter(options)


def _html(options, ctx):
    from harness.leaderboard.site import SiteWriter

    return SiteWriter(options)


@hookimpl
def register_leaderboard_writers(register):
    """Register the ``markdown``, ``json`` and ``html`` writers."""
    register("markdown", _markdown, "leaderboard.md: GitHub tables ranked by synchronisation score, with provenance")
    register("json", _json, "leaderboard.json: the same numbers, versioned JSON Schema (schema_version 1)")
    register("html", _html, "static site: index.html + a page per task and model, sortable tables, SVG charts")
