"""RunStore: durable draw log (torn-tail recovery, crc), lock, atomic manifest, ENOSPC, Parquet."""

from __future__ import annotations

import errno
import json
import os

import polars as pl
import pytest

from harness import store as store_mod
from harness.errors import RunStoreError
from harness.records import Manifest
from harness.store import RunStore, decode_line, encode_line, load_draws, make_run_id, schema_to_json

SCHEMA = {
    "task": pl.Utf8, "pool": pl.Utf8, "n_exemplars": pl.Int64, "context_id": pl.Int64, "sample_index": pl.Int64, "text": pl.Utf8,
    "feat_x": pl.Float64, "exemplar_ids": pl.List(pl.Int64), "world_draws": pl.List(pl.Boolean),
}


def row(i: int, text: str | None = None) -> dict:
    return {"task": "t", "pool": "none", "n_exemplars": 2, "context_id": i // 4, "sample_index": i % 4, "text": text or f"item {i}",
            "feat_x": None if i % 3 == 0 else float(i), "exemplar_ids": [i, i + 1], "world_draws": [True, False]}


def test_line_roundtrip_and_crc_detects_any_byte_change():
    line = encode_line(row(1, 'quote " and ,"crc32":5} inside'))
    assert line.endswith(b"}\n")
    assert decode_line(line[:-1]) == row(1, 'quote " and ,"crc32":5} inside')
    flipped = bytearray(line[:-1])
    flipped[10] ^= 0x01
    assert decode_line(bytes(flipped)) is None
    assert decode_line(line[:-5]) is None  # torn


def test_append_reopen_and_resume_keys(tmp_path):
    with RunStore.open(tmp_path / "run") as store:
        assert store.append([row(i) for i in range(5)]) == 5
        assert store.append([row(4), row(5)]) == 1  # a draw already logged is not logged twice
    with RunStore.open(tmp_path / "run") as store:
        assert len(store) == 6
        assert ("t", "none", 2, 1, 1) in store.done_keys()
        frame = store.frame(SCHEMA)
    assert frame.schema["feat_x"] == pl.Float64 and frame.schema["exemplar_ids"] == pl.List(pl.Int64)
    assert frame["text"].to_list() == [f"item {i}" for i in range(6)]


@pytest.mark.parametrize("tail", [b'{"task":"t","pool":"no', b"\x00\x00\x00\x00", b"garbage\n", b'{"a":1,"crc32":12}\n'])
def test_torn_or_bad_crc_last_line_is_dropped(tmp_path, tail):
    run = tmp_path / "run"
    with RunStore.open(run) as store:
        store.append([row(i) for i in range(3)])
    good_size = (run / "draws.jsonl").stat().st_size
    with open(run / "draws.jsonl", "ab") as fh:
        fh.write(tail)
    with RunStore.open(run) as store:
        assert len(store) == 3
        assert store.recovered_bytes == len(tail)
        assert (run / "draws.jsonl").stat().st_size == good_size
        store.append([row(3)])  # appending after recovery yields a clean log
    with RunStore.open(run) as store:
        assert len(store) == 4 and store.recovered_bytes == 0


def test_corrupt_line_before_good_lines_is_an_error(tmp_path):
    run = tmp_path / "run"
    with RunStore.open(run) as store:
        store.append([row(i) for i in range(3)])
    lines = (run / "draws.jsonl").read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"item 1", b"item X")
    (run / "draws.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(RunStoreError, match="line 2 is corrupt"):
        RunStore.open(run)
    # the failed open released the lock: a second try reports the corruption again, not a lock
    with pytest.raises(RunStoreError, match="corrupt"):
        RunStore.open(run)


def test_second_open_is_refused_while_locked(tmp_path):
    run = tmp_path / "run"
    first = RunStore.open(run)
    try:
        with pytest.raises(RunStoreError) as info:
            RunStore.open(run)
        assert "in use by another `mimic run`" in info.value.one_line()
        assert str(os.getpid()) in info.value.message
        assert "\n" not in info.value.one_line()
    finally:
        first.close()
    RunStore.open(run).close()  # released on close


def test_manifest_atomic_and_versioned(tmp_path, monkeypatch):
    with RunStore.open(tmp_path / "run") as store:
        store.write_manifest(Manifest.from_dict({"run_id": "r", "status": "running"}))
        assert store.read_manifest() == Manifest(run_id="r", status="running")

        def fail_replace(src, dst):
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(store_mod.os, "replace", fail_replace)
        with pytest.raises(RunStoreError, match="could not write"):
            store.write_manifest(Manifest.from_dict({"run_id": "r", "status": "complete"}))
        monkeypatch.undo()
        # the old manifest is intact and no temp file is left behind
        assert store.read_manifest().status == "running"
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["draws.jsonl", "lock", "manifest.json"]


def test_enospc_leaves_the_log_intact_and_resumable(tmp_path, monkeypatch):
    run = tmp_path / "run"
    store = RunStore.open(run)
    store.append([row(i) for i in range(4)])
    before = (run / "draws.jsonl").read_bytes()
    real_write = os.write

    def half_then_enospc(fd, data):
        # the first call writes part of the batch (as a filling disk does), the next one fails
        if not getattr(half_then_enospc, "called", False):
            half_then_enospc.called = True
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.os, "write", half_then_enospc)
    with pytest.raises(RunStoreError) as info:
        store.append([row(i) for i in range(4, 10)])
    assert "no space left on device" in info.value.one_line()
    assert "resume" in info.value.one_line()
    monkeypatch.undo()
    assert (run / "draws.jsonl").read_bytes() == before
    assert len(store) == 4  # nothing counted as done
    store.close()
    with RunStore.open(run) as again:
        assert again.append([row(i) for i in range(4, 10)]) == 6
        assert len(again) == 10


def test_compaction_and_reading_either_form(tmp_path):
    run = tmp_path / "run"
    with RunStore.open(run) as store:
        store.write_manifest(Manifest.from_dict({"run_id": "run", "draws_schema": schema_to_json(SCHEMA)}))
        store.append([row(i) for i in range(6)])
        from_log = load_draws(run)  # typed from the manifest's schema while no Parquet exists
        assert from_log.schema == pl.Schema(SCHEMA)
        store.compact(SCHEMA)
        assert (run / "draws.parquet").exists()
        assert load_draws(run).equals(from_log)
        store.append([row(6)])
        assert not (run / "draws.parquet").exists()  # a stale Parquet copy is removed
        assert load_draws(run).height == 7


def test_run_id_is_deterministic_and_sensitive():
    base = make_run_id("bookworld", 1, "openai:gpt#abcd1234", 0, {"samples": None}, "f" * 16)
    assert base == make_run_id("bookworld", 1, "openai:gpt#abcd1234", 0, {}, "f" * 16)
    assert base.startswith("bookworld-openai-gpt-")
    assert "/" not in base and ":" not in base and "#" not in base
    variants = {
        make_run_id("bookworld", 2, "openai:gpt#abcd1234", 0, {}, "f" * 16),
        make_run_id("bookworld", 1, "openai:gpt#ffff1234", 0, {}, "f" * 16),
        make_run_id("bookworld", 1, "openai:gpt#abcd1234", 1, {}, "f" * 16),
        make_run_id("bookworld", 1, "openai:gpt#abcd1234", 0, {"samples": 10}, "f" * 16),
        make_run_id("bookworld", 1, "openai:gpt#abcd1234", 0, {}, "e" * 16),
    }
    assert base not in variants and len(variants) == 5


def test_manifest_never_sees_secrets(tmp_path):
    from harness.modelspec import parse_model_spec

    spec = parse_model_spec("openai:gpt?api_key=sk-SECRET&base_url=http://x")
    with RunStore.open(tmp_path / "run") as store:
        store.write_manifest(Manifest.from_dict({"model": spec.public()}))
    text = (tmp_path / "run" / "manifest.json").read_text()
    assert "sk-SECRET" not in text and "http://x" in text
    assert json.loads(text)["model"]["options"] == {"base_url": "http://x"}
