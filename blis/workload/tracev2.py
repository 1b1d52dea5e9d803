"""TraceV2 files: a YAML header plus a CSV of one row per request (spec §14.14, §16.5).

``write_trace`` / ``trace_rows_from_requests`` export a run (``--trace-output``); ``load_trace``
rebuilds requests for ``blis replay`` in fixed session mode (every record injected at its
recorded time). Token contents are not stored, so replay synthesises them from its own seed;
only lengths, timing and metadata round-trip.
"""

from __future__ import annotations

import csv
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from blis.errors import ConfigError
from blis.request import COMPLETED, MAX_TOKEN_ID, TIMED_OUT, Request
from blis.rng import make_generator
from blis.workload.spec import WorkloadSpec, _Map, load_yaml, parse_goodput_targets, spec_to_dict

TRACE_VERSION = 3

COLUMNS = (
    "request_id", "client_id", "tenant_id", "slo_class", "[vllm_priority]", "session_id",
    "round_index", "prefix_group", "prefix_length", "streaming", "input_tokens", "output_tokens",
    "text_tokens", "image_tokens", "audio_tokens", "video_tokens", "reason_ratio", "model",
    "deadline_us", "[slo_target_us]", "server_input_tokens", "arrival_time_us", "send_time_us",
    "first_chunk_time_us", "last_chunk_time_us", "num_chunks", "status", "error_message",
    "finish_reason", "[x_request_id]", "[adapter]", "[think_time_us]",
)
"""Spec column order; bracketed columns are written only when some row uses them."""

ALL_COLUMNS = tuple(c.strip("[]") for c in COLUMNS)
OPTIONAL_COLUMNS = frozenset(c.strip("[]") for c in COLUMNS if c.startswith("["))
REQUIRED_COLUMNS = tuple(c for c in ALL_COLUMNS if c not in OPTIONAL_COLUMNS)

_INT_COLUMNS = frozenset((
    "request_id", "round_index", "prefix_length", "input_tokens", "output_tokens", "text_tokens",
    "image_tokens", "audio_tokens", "video_tokens", "deadline_us", "slo_target_us",
    "server_input_tokens", "arrival_time_us", "send_time_us", "first_chunk_time_us",
    "last_chunk_time_us", "num_chunks", "think_time_us"))
_FLOAT_COLUMNS = frozenset(("reason_ratio", "vllm_priority"))
_BOOL_COLUMNS = frozenset(("streaming",))
STATUSES = ("ok", "timeout", "incomplete", "error")
MODES = ("real", "generated", "replayed")

_HEADER_KEYS = ("trace_version", "time_unit", "created_at", "mode", "warm_up_requests",
                "workload_seed", "workload_spec", "session_context_growth", "server", "network",
                "goodput_slo_targets", "kv_offload", "observed_kv_metrics")
_SERVER_KEYS = ("type", "model", "tensor_parallel", "max_num_seqs", "block_size",
                "gpu_memory_utilization", "max_model_len")
_OBSERVED_KV_KEYS = ("source", "hit_rate", "block_hits", "block_queries", "read_time_total",
                     "write_time_total", "vllm_commit")


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def _status(req: Request) -> str:
    if req.state == COMPLETED:
        return "ok"
    if req.state == TIMED_OUT:
        return "timeout"
    return "incomplete"


def trace_rows_from_requests(requests: list[Request]) -> list[dict]:
    """One row per request that reached the cluster, in the given (arrival-hook) order.

    ``request_id`` is the row index; chunk times are absolute and only set once TTFT was set.
    """
    rows = []
    for i, r in enumerate(requests):
        first = last = 0
        chunks = 0
        if r.ttft_set:
            first = r.arrival_time + int(r.first_token_time)
            last = first + int(sum(r.itl))
            chunks = 1 + len(r.itl)
        rows.append({
            "request_id": i, "client_id": r.client_id, "tenant_id": r.tenant_id,
            "slo_class": r.slo_class, "vllm_priority": r.priority, "session_id": r.session_id,
            "round_index": r.round_index, "prefix_group": r.prefix_group,
            "prefix_length": r.prefix_length, "streaming": r.streaming,
            "input_tokens": r.input_len - r.prefix_length, "output_tokens": r.output_len,
            "text_tokens": r.text_tokens, "image_tokens": r.image_tokens,
            "audio_tokens": r.audio_tokens, "video_tokens": r.video_tokens,
            "reason_ratio": r.reason_ratio, "model": r.model, "deadline_us": r.deadline,
            "slo_target_us": r.slo_target_us, "server_input_tokens": r.input_len,
            "arrival_time_us": r.arrival_time, "send_time_us": r.arrival_time,
            "first_chunk_time_us": first, "last_chunk_time_us": last, "num_chunks": chunks,
            "status": _status(r), "error_message": "", "finish_reason": "",
            "adapter": r.adapter, "think_time_us": r.think_time_us,
        })
    return rows


def trace_header_for_run(res: Any, mode: str = "generated") -> dict:
    """Header for ``--trace-output`` of a finished run (``res`` is a ``SimResult``).

    Carries the workload seed and spec (generated runs only: a replay's requests come from its
    input trace, not from a spec), the simulated server and the merged goodput targets.
    """
    cfg = res.cfg
    dep = res.deployment
    header: dict[str, Any] = {
        "trace_version": TRACE_VERSION, "time_unit": "microseconds",
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": mode, "warm_up_requests": 0, "workload_seed": int(cfg.seed),
    }
    if mode == "generated" and isinstance(cfg.workload, WorkloadSpec):
        header["workload_spec"] = spec_to_dict(cfg.workload)
        mt = [c.multi_turn for c in cfg.workload.clients if c.multi_turn is not None]
        if any(m.context_growth == "accumulate" for m in mt):
            header["session_context_growth"] = "accumulate"
    header["server"] = {
        "type": "blis", "model": cfg.deployment.model, "tensor_parallel": int(dep.tp),
        "max_num_seqs": int(cfg.engine.max_num_seqs), "block_size": int(dep.block_size),
        "gpu_memory_utilization": float(cfg.deployment.gpu_memory_utilization),
        "max_model_len": int(dep.max_model_len)}
    targets = getattr(cfg, "slo_targets", None) or {}
    if targets:
        header["goodput_slo_targets"] = {c: {d: float(v) for d, v in t.items() if v}
                                         for c, t in sorted(targets.items())}
    return header


def _fmt(col: str, v: Any) -> str:
    if v is None:
        return ""
    if col in _BOOL_COLUMNS:
        return "true" if v else "false"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if f.is_integer() and abs(f) < 1e15:
            return str(int(f))
        return repr(f)
    return str(v)


def _plain(v: Any) -> Any:
    """numpy scalars and tuples -> plain YAML-safe Python values."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _columns_for(header: dict, rows: list[dict]) -> list[str]:
    real = header.get("mode") == "real"

    def used(col: str) -> bool:
        if col == "vllm_priority":
            return any(row.get("vllm_priority") for row in rows) or (
                real and any(row.get("slo_class") for row in rows))
        if col == "x_request_id":
            return real
        return any(row.get(col) for row in rows)

    return [c for c in ALL_COLUMNS if c not in OPTIONAL_COLUMNS or used(c)]


def write_trace(prefix: str | os.PathLike, header: dict, rows: list[dict]) -> tuple[str, str]:
    """Write ``<prefix>.yaml`` (header) and ``<prefix>.csv`` (rows); returns both paths.

    The header is validated with the same strict rules ``load_trace`` applies, so a trace this
    writes always loads back.
    """
    prefix = os.fspath(prefix)
    header_path, data_path = prefix + ".yaml", prefix + ".csv"
    full = _plain({"trace_version": TRACE_VERSION, "time_unit": "microseconds", **header})
    parse_trace_header(full)
    Path(header_path).write_text(yaml.safe_dump(full, sort_keys=False, default_flow_style=False))
    cols = _columns_for(full, rows)
    with open(data_path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for row in rows:
            w.writerow([_fmt(c, row.get(c, _default(c))) for c in cols])
    return header_path, data_path


def _default(col: str) -> Any:
    if col in _INT_COLUMNS:
        return 0
    if col in _FLOAT_COLUMNS:
        return 0.0
    if col in _BOOL_COLUMNS:
        return False
    if col == "status":
        return "ok"
    return ""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def parse_trace_header(data: Any, field_name: str = "trace-header") -> dict:
    """Validate a loaded header mapping strictly; returns it with goodput targets normalised."""
    if data is None:
        raise ConfigError(field_name, "is empty")
    m = _Map(data, "", _HEADER_KEYS, field_name)
    out: dict[str, Any] = {}
    out["trace_version"] = m.integer("trace_version")
    if not 0 <= out["trace_version"] <= TRACE_VERSION:
        raise ConfigError("trace_version", f"must be <= {TRACE_VERSION} (this reader's version), "
                                           f"got {out['trace_version']}")
    out["time_unit"] = m.text("time_unit")
    if out["time_unit"] not in ("", "microseconds", "us"):  # real traces write "us"
        raise ConfigError("time_unit", f"only 'microseconds' (or 'us') is supported, "
                                       f"got {out['time_unit']!r}")
    created = data.get("created_at")
    out["created_at"] = "" if created is None else str(created)
    out["mode"] = m.text("mode")
    if out["mode"] not in ("",) + MODES:
        raise ConfigError("mode", f"must be one of {', '.join(MODES)}, got {out['mode']!r}")
    out["warm_up_requests"] = m.integer("warm_up_requests")
    if out["warm_up_requests"] < 0:
        raise ConfigError("warm_up_requests", f"must be >= 0, got {out['warm_up_requests']}")
    out["workload_seed"] = m.integer("workload_seed")
    ws = data.get("workload_spec")
    if ws is not None and not isinstance(ws, (str, dict)):
        raise ConfigError("workload_spec", "expected a string or a mapping")
    out["workload_spec"] = ws if ws is not None else ""
    out["session_context_growth"] = m.text("session_context_growth")
    if out["session_context_growth"] not in ("", "accumulate"):
        raise ConfigError("session_context_growth",
                          f"must be empty or 'accumulate', got {out['session_context_growth']!r}")
    if m.has("server"):
        sm = _Map(m.raw("server"), "server", _SERVER_KEYS, field_name)
        out["server"] = {
            "type": sm.text("type"), "model": sm.text("model"),
            "tensor_parallel": sm.integer("tensor_parallel"), "max_num_seqs": sm.integer("max_num_seqs"),
            "block_size": sm.integer("block_size"),
            "gpu_memory_utilization": sm.number("gpu_memory_utilization"),
            "max_model_len": sm.integer("max_model_len")}
    if m.has("network"):
        nm = _Map(m.raw("network"), "network", ("measured_rtt_ms",), field_name)
        out["network"] = {"measured_rtt_ms": nm.number("measured_rtt_ms")}
    out["goodput_slo_targets"] = parse_goodput_targets(m.raw("goodput_slo_targets"),
                                                       root_name=field_name)
    if m.has("kv_offload"):
        if not isinstance(m.raw("kv_offload"), dict):
            raise ConfigError("kv_offload", "expected a mapping")
        out["kv_offload"] = m.raw("kv_offload")
    if m.has("observed_kv_metrics"):
        om = _Map(m.raw("observed_kv_metrics"), "observed_kv_metrics", _OBSERVED_KV_KEYS, field_name)
        out["observed_kv_metrics"] = {
            "source": om.text("source"), "hit_rate": om.number("hit_rate"),
            "block_hits": om.integer("block_hits"), "block_queries": om.integer("block_queries"),
            "read_time_total": om.number("read_time_total"),
            "write_time_total": om.number("write_time_total"), "vllm_commit": om.text("vllm_commit")}
    return out


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _column_parser(col: str):
    """Converter for one column's cell text (raises ValueError on bad text)."""
    if col in _INT_COLUMNS:
        optional = col in OPTIONAL_COLUMNS
        return lambda t: 0 if optional and t == "" else int(t)
    if col in _FLOAT_COLUMNS:
        def to_float(t):
            v = 0.0 if t == "" else float(t)
            if not math.isfinite(v):
                raise ValueError(t)
            return v
        return to_float
    if col in _BOOL_COLUMNS:
        def to_bool(t):
            if t in _TRUE:
                return True
            if t in _FALSE:
                return False
            raise ValueError(t)
        return to_bool
    return None


_EXPECTED = {"int": "an integer", "float": "a finite number", "bool": "true or false"}
_NON_NEGATIVE = ("input_tokens", "output_tokens", "prefix_length", "arrival_time_us",
                 "send_time_us", "deadline_us", "server_input_tokens")


# token counts above 10^7 fit no model's context; times above 2^53 us (285 years) lose precision
_MAX_CELL = {False: 10_000_000, True: 1 << 53}


def _kind(col: str) -> str:
    return "int" if col in _INT_COLUMNS else "float" if col in _FLOAT_COLUMNS else "bool"


def read_trace_rows(data_path: str | os.PathLike) -> list[dict]:
    """Typed rows of a TraceV2 CSV; columns are matched by name, unknown ones are ignored (as Go).

    Cells are converted column by column (fast for large traces); errors name the CSV line.
    """
    try:
        fh = open(data_path, newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError("trace-data", f"cannot read {os.fspath(data_path)}: "
                                        f"{exc.strerror or exc}") from None
    with fh:
        try:
            lines = [(i, cells) for i, cells in enumerate(csv.reader(fh), start=1) if cells]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError("trace-data", f"invalid CSV: {exc}") from None
    if not lines:
        raise ConfigError("trace-data", "empty CSV (no header row)")
    names = [n.strip() for n in lines[0][1]]
    if len(set(names)) != len(names):
        raise ConfigError("trace-data", "duplicate column names")
    for n in REQUIRED_COLUMNS:
        if n not in names:
            raise ConfigError(f"trace-data.{n}", "required column missing")
    body = lines[1:]
    for line_no, cells in body:
        if len(cells) != len(names):
            raise ConfigError(f"trace-data line {line_no}",
                              f"has {len(cells)} cells, expected {len(names)}")
    known = [(j, n) for j, n in enumerate(names) if n in ALL_COLUMNS]
    names = [n for _, n in known]
    columns: list[list] = []
    for j, name in known:
        raw = [cells[j] for _, cells in body]
        conv = _column_parser(name)
        if conv is None:
            columns.append(raw)
            continue
        try:
            columns.append([conv(t) for t in raw])
        except ValueError:
            for (line_no, _), t in zip(body, raw):
                try:
                    conv(t)
                except ValueError:
                    raise ConfigError(f"trace-data line {line_no}: {name}",
                                      f"expected {_EXPECTED[_kind(name)]}, got {t!r}") from None
    by_name = dict(zip(names, columns))
    for (line_no, _), status in zip(body, by_name["status"]):
        if status not in STATUSES:
            raise ConfigError(f"trace-data line {line_no}: status",
                              f"must be one of {', '.join(STATUSES)}, got {status!r}")
    for name in _NON_NEGATIVE:
        for (line_no, _), v in zip(body, by_name[name]):
            if v < 0:
                raise ConfigError(f"trace-data line {line_no}: {name}", f"must be >= 0, got {v}")
            if v > _MAX_CELL[name.endswith("_us")]:
                raise ConfigError(f"trace-data line {line_no}: {name}",
                                  f"must be <= {_MAX_CELL[name.endswith('_us')]}, got {v}")
    return [dict(zip(names, vals)) for vals in zip(*columns)] if body else []


def load_trace(header_path: str | os.PathLike, data_path: str | os.PathLike,
               seed: int = 42) -> tuple[dict, list[Request]]:
    """Header and requests of a TraceV2 trace for fixed-mode replay, sorted by arrival (stable).

    Token ids come from ``Rand(seed)``: one prefix per group (first-seen order; its length is that
    of the group's first record with a ``prefix_length`` above 0, as Go does), then every record's input suffix and output tokens in record order (one vectorised
    draw).
    """
    header = parse_trace_header(load_yaml(header_path, "trace-header"))
    rows = read_trace_rows(data_path)
    rng = make_generator(int(seed))
    lengths: dict[str, int] = {}
    for row in rows:
        g = row["prefix_group"]
        if g and not lengths.get(g):
            lengths[g] = row["prefix_length"]
    prefixes = {g: rng.integers(0, MAX_TOKEN_ID, size=n, dtype=np.int32) for g, n in lengths.items()}
    n_in = [row["server_input_tokens"] if row["server_input_tokens"] > 0 and not row["prefix_group"]
            else row["input_tokens"] for row in rows]
    n_out = [row["output_tokens"] for row in rows]
    draws = rng.integers(0, MAX_TOKEN_ID, size=sum(n_in) + sum(n_out), dtype=np.int32)
    seen_ids: set[int] = set()
    requests = []
    pos = 0
    for row, ni, no in zip(rows, n_in, n_out):
        if row["request_id"] in seen_ids:
            raise ConfigError("trace-data", f"duplicate request_id {row['request_id']}")
        seen_ids.add(row["request_id"])
        group = row["prefix_group"]
        suffix = draws[pos:pos + ni]
        out = draws[pos + ni:pos + ni + no]
        pos += ni + no
        prefix = prefixes.get(group) if group else None
        inp = np.concatenate((prefix, suffix)) if prefix is not None and prefix.shape[0] else suffix
        arrival = row["send_time_us"] if row["send_time_us"] > 0 else row["arrival_time_us"]
        req = Request(
            f"request_{row['request_id']}", inp, out, arrival, max_output_len=no,
            deadline=row["deadline_us"], slo_class=row["slo_class"], tenant_id=row["tenant_id"],
            model=row["model"], client_id=row["client_id"], prefix_group=group,
            prefix_length=0 if prefix is None else int(prefix.shape[0]),
            session_id=row["session_id"], round_index=row["round_index"],
            streaming=row["streaming"], adapter=row.get("adapter", ""),
            slo_target_us=row.get("slo_target_us", 0), reason_ratio=row["reason_ratio"],
            think_time_us=row.get("think_time_us", 0))
        req.text_tokens = row["text_tokens"]
        req.image_tokens = row["image_tokens"]
        req.audio_tokens = row["audio_tokens"]
        req.video_tokens = row["video_tokens"]
        requests.append(req)
    requests.sort(key=lambda r: r.arrival_time)
    return header, requests
