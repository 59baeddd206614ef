"""``leaderboard.json``: the leaderboard document, validated against ``schema.json`` before writing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema

from harness.errors import DataError
from harness.leaderboard.document import document_of, load_schema


def validate(doc: Mapping[str, Any]) -> None:
    """Raise :class:`DataError` when the document does not match schema version 1."""
    try:
        jsonschema.Draft202012Validator(load_schema()).validate(doc)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise DataError(f"leaderboard document does not match its schema at {where}: {exc.message}",
                        "a run holds values of an unexpected type; check its manifest and estimates") from None


class JsonWriter:
    """Writes ``leaderboard.json`` (UTF-8, sorted keys, schema-checked)."""

    def __init__(self, options: dict[str, Any] | None = None):
        self.filename = str((options or {}).get("filename", "leaderboard.json"))

    def write(self, data, out_dir: Path) -> list[Path]:
        """Validate and write the document of ``data``."""
        doc = document_of(data)
        validate(doc)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / self.filename
        path.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        return [path]
