"""Plugin ``builtin-sources``: registers the reference sources of :mod:`harness.sources`."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.sources import csv_source, hf_source, jsonl_source, parquet_source, stdlib_source


@hookimpl
def register_reference_sources(register):
    """Register the built-in reference sources."""
    register("csv", csv_source, "a CSV file (path, limit, filter, rename)")
    register("parquet", parquet_source, "a Parquet file (path, limit, filter, rename)")
    register("jsonl", jsonl_source, "a JSON-lines file (path, limit, filter, rename)")
    register("hf", hf_source, "a Hugging Face datasets split (path, name, split, data_files, ...)")
    register("python-stdlib", stdlib_source, "a seeded sample of top-level functions from the Python standard library")
