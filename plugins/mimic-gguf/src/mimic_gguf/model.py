"""A loaded GGUF model and its context, through llama.cpp's C API (no high-level ``Llama`` object).

Everything here is blocking and not thread-safe: the mimic calls it from one worker thread at a
time, behind a lock.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as C
import numpy as np

from harness import ModelSpecError, PermanentBackendError

_ATTR_CONTROL = 8  # LLAMA_TOKEN_ATTR_CONTROL: <eos>, <pad>, <start_of_turn>, <|im_end|>, <unusedN>...
_backend_ready = False
_MAX_SEQUENCE_IDS = 256  # LLAMA_MAX_SEQ: the most sequence ids a llama.cpp context takes


def _quiet_llama_logs() -> None:
    """Keep llama.cpp's load chatter off stderr (``MIMIC_GGUF_VERBOSE=1`` shows it).

    llama-cpp-python's callback maps ggml's log levels one step too high, so its own
    ``set_verbose(False)`` still prints warnings; CRITICAL silences them, and load failures
    surface as our own one-line errors instead.
    """
    import llama_cpp._logger as llama_logger

    if os.environ.get("MIMIC_GGUF_VERBOSE") != "1":
        llama_logger.logger.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class ContextConfig:
    """Load-time settings of the llama.cpp context."""

    # n_ctx 3072: without flash attention every token's attention covers every KV cell up to the highest
    # one in use, other sequences' included, so a bigger cache that a long run fills costs more per token
    # than its larger batches save. Measured (benchmarks/gguf_long_run.py, python-functions 16 x 6, 2
    # threads): gguf:default 166.3 s at 4096, 166.9 s at 3072, 178.7 s at 2048; gguf:smollm2 (chat)
    # 221.0 s at 8192, 201.3 s at 4096, 167.7 s at 3072 (benchmarks/results/gguf_long_run-2026-12-06.txt).
    # Prompts and a generation must fit in it: ?n_ctx=8192 for longer ones.
    n_ctx: int = 3072
    n_threads: int = 1
    n_batch: int = 512
    max_sequences: int = 32
    prefix_sharing: bool = True  # a prompt starts from the cells of the longest cached prefix

    @property
    def prefix_entries(self) -> int:
        """Prompts kept cached after their draws (each takes two sequence ids after the sampling slots)."""
        return max(1, min(self.max_sequences, (_MAX_SEQUENCE_IDS - self.max_sequences) // 2))

    @property
    def sequence_ids(self) -> int:
        """Sequence ids the context needs: the sampling slots, then two per cached prompt."""
        return self.max_sequences + 2 * self.prefix_entries


class LoadedModel:
    """One GGUF model with a context whose unified KV cache holds ``max_sequences`` sequences."""

    def __init__(self, path: Path, config: ContextConfig):
        global _backend_ready
        _quiet_llama_logs()
        if not _backend_ready:
            C.llama_backend_init()
            _backend_ready = True
        self.path = path
        self.config = config
        model_params = C.llama_model_default_params()
        self.model = C.llama_model_load_from_file(str(path).encode("utf-8"), model_params)
        if not self.model:
            raise ModelSpecError(f"llama.cpp could not load {path} as a model", "check that the file is a complete GGUF of a supported architecture")
        params = C.llama_context_default_params()
        params.n_ctx = config.n_ctx
        params.n_batch = config.n_batch
        params.n_ubatch = config.n_batch
        params.n_seq_max = config.sequence_ids
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads
        # One shared cell pool: a prompt decoded once is visible to every sequence copied from it.
        params.kv_unified = True
        # A sliding-window cache sized per sequence breaks when many sequences share a prompt.
        params.swa_full = True
        # ggml's CPU flash attention picks its kernel by shape and thread count (one query row over
        # >= 512 cells is split across threads, >= 64 rows take a tiled kernel), so a score would
        # change with n_threads; without it every attention output is computed whole by one thread.
        # It would make long generation runs cheaper (it skips the cells of other sequences, which
        # this kernel computes and masks), but it moves both embedded models' next-token
        # log-probabilities by 0.09-0.32 nats (plugins/mimic-gguf/benchmarks/flash_attention_logprobs.py),
        # which would change the distribution being measured: it stays off for generation too.
        params.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        self.ctx = C.llama_init_from_model(self.model, params)
        if not self.ctx:
            C.llama_model_free(self.model)
            self.model = None
            raise ModelSpecError(
                f"llama.cpp could not create a context for {path.name} (n_ctx={config.n_ctx}, max_sequences={config.max_sequences})",
                "lower the n_ctx or max_sequences option",
            )
        self.clears = 0  # times the whole cache was cleared (a prefix cache then forgets its entries)
        self.n_ctx = C.llama_n_ctx(self.ctx)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.model)
        self.memory = C.llama_get_memory(self.ctx)
        self.vocab = C.llama_model_get_vocab(self.model)
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(C.llama_vocab_get_add_bos(self.vocab))
        self.bos = C.llama_vocab_bos(self.vocab)
        self.eos = C.llama_vocab_eos(self.vocab)
        self.batch_capacity = max(config.n_batch, config.max_sequences)
        self.batch = C.llama_batch_init(self.batch_capacity, 0, config.max_sequences)
        self._piece_buf = ctypes.create_string_buffer(512)
        self._pieces: dict[int, bytes] = {}
        self.special_strings = self._control_token_strings()
        self.chat_template = self._chat_template()

    # -- vocabulary ---------------------------------------------------------------------------
    def _control_token_strings(self) -> frozenset[str]:
        """The literal text of every control token (``<eos>``, ``<unused7>``...), to strip from outputs."""
        strings = set()
        for token in range(self.n_vocab):
            if C.llama_vocab_get_attr(self.vocab, token) & _ATTR_CONTROL:
                text = self.piece(token, special=True).decode("utf-8", errors="ignore")
                if text.strip():
                    strings.add(text)
        return frozenset(strings)

    def _chat_template(self) -> str | None:
        raw = C.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8") if raw else None

    def token_text(self, token: int) -> str:
        """The literal text of a token (special tokens rendered), for logprob tables."""
        return self.piece(token, special=True).decode("utf-8", errors="replace")

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes a token contributes to the text; control tokens give ``b""`` unless ``special``."""
        if not special and token in self._pieces:
            return self._pieces[token]
        n = C.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
            out = buf.raw[:n]
        else:
            out = self._piece_buf.raw[:n]
        if not special:
            self._pieces[token] = out
        return out

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (``<eos>``, ``<end_of_turn>``, ``<|im_end|>``...)."""
        return bool(C.llama_vocab_is_eog(self.vocab, token))

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = False) -> list[int]:
        """Tokenize ``text``; ``add_bos`` adds BOS only where the model asks for one."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (C.llama_token * capacity)()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_bos, parse_special)
        if n < 0:
            capacity = -n
            buf = (C.llama_token * capacity)()
            n = C.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_bos, parse_special)
        tokens = list(buf[:n])
        # A chat template that writes <bos> itself plus the tokenizer's own BOS would double it.
        if len(tokens) >= 2 and tokens[0] == tokens[1] == self.bos and self.bos >= 0:
            tokens = tokens[1:]
        return tokens

    def prefix_tokens(self, text: str) -> list[int]:
        """Tokens of a prompt or context, never empty.

        An empty text from a model that adds no BOS starts after an end-of-text token, the
        document boundary such models were trained on (as lm-eval does).
        """
        tokens = self.tokenize(text, add_bos=True)
        if not tokens:
            tokens = [self.eos if self.eos >= 0 else self.bos]
        return tokens

    # -- decoding -----------------------------------------------------------------------------
    def clear(self) -> None:
        """Drop every sequence from the KV cache."""
        C.llama_memory_clear(self.memory, True)
        self.clears += 1

    def copy_sequence(self, src: int, dst: int) -> None:
        """Make sequence ``dst`` share all of ``src``'s cached tokens (no recompute)."""
        C.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def copy_positions(self, src: int, dst: int, end: int) -> None:
        """Make sequence ``dst`` share ``src``'s cached positions ``[0, end)``."""
        C.llama_memory_seq_cp(self.memory, src, dst, 0, end)

    def drop_sequence(self, seq: int) -> None:
        """Free a finished sequence's cells."""
        C.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def drop_positions(self, seq: int, start: int) -> None:
        """Free ``seq``'s cells from position ``start`` on (its earlier positions stay cached)."""
        if not C.llama_memory_seq_rm(self.memory, seq, start, -1):
            raise PermanentBackendError("llama.cpp could not shorten a cached sequence", "report this with the model file name")

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode one batch of ``(token, position, sequence, wants_logits)`` entries."""
        if len(entries) > self.batch_capacity:
            raise ValueError(f"batch of {len(entries)} exceeds capacity {self.batch_capacity}")
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        rc = C.llama_decode(self.ctx, batch)
        if rc != 0:
            raise PermanentBackendError(
                f"llama_decode failed with code {rc} ({len(entries)} tokens, n_ctx={self.n_ctx})",
                "raise the n_ctx option or lower max_sequences",
            )

    def prefill(self, tokens: list[int], seq: int, start: int = 0) -> None:
        """Decode ``tokens`` into ``seq`` from position ``start``; logits only for the last one."""
        step = self.config.n_batch
        for lo in range(0, len(tokens), step):
            chunk = tokens[lo : lo + step]
            last = lo + len(chunk) == len(tokens)
            self.decode([(tok, start + lo + j, seq, last and j == len(chunk) - 1) for j, tok in enumerate(chunk)])

    def logits_row(self, index: int, dtype: type = np.float64) -> np.ndarray:
        """A copy of the logits of batch entry ``index`` (``-1``: the last one with logits)."""
        return self.logits_view(index).astype(dtype)

    def logits_view(self, index: int) -> np.ndarray:
        """The logits of batch entry ``index`` in place (float32, read-only; valid until the next decode)."""
        ptr = C.llama_get_logits_ith(self.ctx, index)
        if not ptr:
            raise PermanentBackendError("llama.cpp returned no logits for a batch entry", "report this with the model file name")
        row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        row.flags.writeable = False
        return row

    def close(self) -> None:
        """Free the batch, context and model (idempotent)."""
        if getattr(self, "batch", None) is not None:
            C.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None):
            C.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            C.llama_model_free(self.model)
            self.model = None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of a logits row at temperature 1."""
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())
