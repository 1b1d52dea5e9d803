"""The request record shared by the workload generator, the cluster and the engine (spec §3.1)."""

from __future__ import annotations

import numpy as np
from xxhash import xxh3_128_digest as block_digest

QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
TIMED_OUT = "timed_out"
WAITING_FOR_REMOTE_KVS = "waiting_for_remote_kvs"

MAX_TOKEN_ID = 128000
_NO_TOKENS = np.empty(0, dtype=np.int32)


def hash_block(prev_hash: bytes, tokens: np.ndarray) -> bytes:
    """Chained block hash: identifies the whole prefix up to and including this full block.

    Hashes are never printed, only compared, so a 128-bit digest over the parent hash and the
    token bytes (``block_digest``, XXH3-128: the one hash function of prefix caching, also used
    by ``blis.engine.kv_cache``) replaces the reference's hex-of-decimal-strings SHA-256 while
    keeping the same prefix identity; it is ten times cheaper per block than BLAKE2b.
    """
    return block_digest(prev_hash + tokens.tobytes())


class Request:
    """One inference request. Times are absolute integer microseconds unless noted."""

    __slots__ = (
        "id", "_input_tokens", "_output_tokens", "_token_source", "input_len", "output_len", "max_output_len",
        "state", "progress_index", "ttft_set", "first_token_time", "arrival_time",
        "scheduled_step_idx", "finished_step_idx", "num_new_tokens", "length_capped", "itl",
        "priority", "tenant_id", "slo_class", "session_id", "round_index", "client_id",
        "prefix_group", "prefix_length", "streaming", "model", "adapter",
        "text_tokens", "image_tokens", "audio_tokens", "video_tokens", "reason_ratio",
        "assigned_instance", "deadline", "slo_target_us", "is_decode_sub_request",
        "enqueue_time", "schedule_time", "completion_time", "think_time_us", "computed_tokens",
        "_block_hashes", "lazy_from", "run_key", "exit_step", "kv_step",
    )

    def __init__(self, id: str, input_tokens, output_tokens, arrival_time: int, *,
                 max_output_len: int | None = None, deadline: int = 0, slo_class: str = "",
                 tenant_id: str = "", model: str = "", client_id: str = "",
                 prefix_group: str = "", prefix_length: int = 0, session_id: str = "",
                 round_index: int = 0, streaming: bool = False, adapter: str = "",
                 slo_target_us: int = 0, reason_ratio: float = 0.0, think_time_us: int = 0):
        self.id = id
        self._input_tokens = np.asarray(input_tokens, dtype=np.int32)
        self._output_tokens = np.asarray(output_tokens, dtype=np.int32)
        self._token_source = None
        self.input_len = int(self._input_tokens.shape[0])
        self.output_len = int(self._output_tokens.shape[0])
        self.max_output_len = self.output_len if max_output_len is None else int(max_output_len)
        self.state = QUEUED
        self.progress_index = 0
        self.ttft_set = False
        self.first_token_time = 0
        self.arrival_time = int(arrival_time)
        self.scheduled_step_idx = 0
        self.finished_step_idx = 0
        self.num_new_tokens = 0
        self.length_capped = False
        self.itl: list[int] = []
        self.priority = 0.0
        self.tenant_id = tenant_id
        self.slo_class = slo_class
        self.session_id = session_id
        self.round_index = round_index
        self.client_id = client_id
        self.prefix_group = prefix_group
        self.prefix_length = prefix_length
        self.streaming = streaming
        self.model = model
        self.adapter = adapter
        self.text_tokens = 0
        self.image_tokens = 0
        self.audio_tokens = 0
        self.video_tokens = 0
        self.reason_ratio = reason_ratio
        self.assigned_instance = ""
        self.deadline = int(deadline)
        self.slo_target_us = int(slo_target_us)
        self.is_decode_sub_request = False
        self.enqueue_time = -1
        self.schedule_time = -1
        self.completion_time = -1
        self.think_time_us = think_time_us
        self.computed_tokens = 0
        self._block_hashes = None
        self.lazy_from = -1  # engine bookkeeping for lazily advanced decodes (blis.engine.instance)
        self.run_key = 0
        self.exit_step = 0
        self.kv_step = -1

    # ---- tokens ----------------------------------------------------------------------------
    def defer_tokens(self, input_len: int, output_len: int, source, index: int) -> None:
        """Tokens come from ``source.views(index)`` on first use (a lazily drawn workload)."""
        self.input_len = input_len
        self.output_len = output_len
        self._token_source = (source, index)

    def _load_tokens(self) -> None:
        source, index = self._token_source
        self._token_source = None
        self._input_tokens, self._output_tokens = source.views(index)

    @property
    def input_tokens(self) -> np.ndarray:
        if self._token_source is not None:
            self._load_tokens()
        return self._input_tokens

    @property
    def output_tokens(self) -> np.ndarray:
        if self._token_source is not None:
            self._load_tokens()
        return self._output_tokens

    def drop_payload(self) -> None:
        """A finished request of a run without per-request output: free its bulky data (token
        views keep a whole generated chunk alive, ITL samples are already aggregated)."""
        if self._token_source is not None:
            source, index = self._token_source
            self._token_source = None
            source.release(index)
        self._input_tokens = self._output_tokens = _NO_TOKENS
        self.itl = []
        self._block_hashes = None

    def block_hashes(self, block_size: int) -> list[bytes]:
        """Chained hashes of the full input blocks (computed once, reused by cache and router)."""
        bh = self._block_hashes
        if bh is None or bh[0] != block_size:
            hashes = []
            prev = b""
            data = self.input_tokens.tobytes()  # = each block's tokens.tobytes(), in one copy
            width = block_size * self.input_tokens.itemsize
            for start in range(0, (self.input_len - block_size + 1) * self.input_tokens.itemsize, width):
                prev = block_digest(prev + data[start:start + width])
                hashes.append(prev)
            bh = (block_size, hashes)
            self._block_hashes = bh
        return bh[1]

    def tokens_between(self, a: int, b: int) -> np.ndarray:
        """Tokens at sequence positions ``[a, b)`` of input followed by output (int32)."""
        n_in = self.input_len
        if b <= n_in:
            return self.input_tokens[a:b]
        if a >= n_in:
            return self.output_tokens[a - n_in:b - n_in]
        return np.concatenate((self.input_tokens[a:], self.output_tokens[:b - n_in]))

    def __repr__(self) -> str:
        return (f"Request({self.id}, in={self.input_len}, out={self.output_len}, "
                f"arr={self.arrival_time}, state={self.state}, pi={self.progress_index})")
