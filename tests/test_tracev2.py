"""TraceV2 export and fixed-mode replay loading (spec §14.14, §16.5)."""

import csv

import numpy as np
import pytest
import yaml

from blis.errors import ConfigError
from blis.request import COMPLETED, TIMED_OUT
from blis.workload import (
    generate_requests,
    load_trace,
    parse_workload_spec,
    spec_to_dict,
    trace_rows_from_requests,
    write_trace,
)
from blis.workload.tracev2 import ALL_COLUMNS, OPTIONAL_COLUMNS

UNBOUNDED = (1 << 63) - 1


def const(v):
    return {"type": "constant", "params": {"value": v}}


def workload():
    mt = {"max_rounds": 2, "think_time_us": 1000, "context_growth": "accumulate"}
    return parse_workload_spec({
        "version": "2", "seed": 5, "aggregate_rate": 20,
        "clients": [
            {"id": "a", "slo_class": "critical", "tenant_id": "t1", "rate_fraction": 2,
             "arrival": {"process": "poisson"},
             "input_distribution": {"type": "gaussian",
                                    "params": {"mean": 80, "std_dev": 20, "min": 10, "max": 200}},
             "output_distribution": const(12), "prefix_group": "sys", "prefix_length": 16,
             "timeout": 4_000_000},
            {"id": "b", "slo_class": "batch", "rate_fraction": 1, "arrival": {"process": "gamma", "cv": 2},
             "input_distribution": const(30), "output_distribution": const(7), "model": "m",
             "closed_loop": False, "reasoning": {"multi_turn": mt}},
        ]})


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_round_trip_preserves_timing_lengths_and_metadata(tmp_path):
    spec = workload()
    reqs = generate_requests(spec, 120, UNBOUNDED)
    header = {"mode": "generated", "workload_seed": spec.seed, "workload_spec": spec_to_dict(spec)}
    hp, dp = write_trace(tmp_path / "t", header, trace_rows_from_requests(reqs))
    assert hp.endswith("t.yaml") and dp.endswith("t.csv")
    hdr, loaded = load_trace(hp, dp, seed=42)
    assert hdr["trace_version"] == 3 and hdr["time_unit"] == "microseconds"
    assert parse_workload_spec(hdr["workload_spec"]) == spec
    assert len(loaded) == len(reqs)
    for x, y in zip(reqs, loaded):
        assert y.id == x.id
        assert (y.arrival_time, y.input_len, y.output_len, y.max_output_len) == \
            (x.arrival_time, x.input_len, x.output_len, x.max_output_len)
        assert (y.slo_class, y.tenant_id, y.client_id, y.model, y.deadline) == \
            (x.slo_class, x.tenant_id, x.client_id, x.model, x.deadline)
        assert (y.prefix_group, y.prefix_length, y.session_id, y.round_index, y.think_time_us) == \
            (x.prefix_group, x.prefix_length, x.session_id, x.round_index, x.think_time_us)
    sys_reqs = [y for y in loaded if y.prefix_group == "sys"]
    assert len(sys_reqs) > 2
    assert all(np.array_equal(y.input_tokens[:16], sys_reqs[0].input_tokens[:16]) for y in sys_reqs)
    _, again = load_trace(hp, dp, seed=42)
    assert all(np.array_equal(a.input_tokens, b.input_tokens) for a, b in zip(loaded, again))
    _, other = load_trace(hp, dp, seed=7)
    assert not np.array_equal(loaded[0].input_tokens, other[0].input_tokens)


def test_columns_in_spec_order_and_optional_only_when_used(tmp_path):
    reqs = generate_requests(workload(), 30, UNBOUNDED)
    _, dp = write_trace(tmp_path / "plain", {"mode": "generated"}, trace_rows_from_requests(reqs))
    cols = read_csv(dp)[0]
    assert cols == [c for c in ALL_COLUMNS if c not in OPTIONAL_COLUMNS or c == "think_time_us"]
    assert cols[:4] == ["request_id", "client_id", "tenant_id", "slo_class"]
    assert cols[-3:] == ["error_message", "finish_reason", "think_time_us"]

    reqs[0].adapter = "lora"
    reqs[1].slo_target_us = 9000
    reqs[2].priority = 5.0
    _, dp = write_trace(tmp_path / "full", {"mode": "generated"}, trace_rows_from_requests(reqs))
    cols = read_csv(dp)[0]
    assert cols == [c for c in ALL_COLUMNS if c != "x_request_id"]
    assert cols.index("vllm_priority") == 4 and cols.index("slo_target_us") == cols.index("deadline_us") + 1
    _, dp = write_trace(tmp_path / "real", {"mode": "real"}, trace_rows_from_requests(reqs))
    assert "x_request_id" in read_csv(dp)[0]


def test_input_tokens_column_is_suffix_only(tmp_path):
    reqs = generate_requests(workload(), 20, UNBOUNDED)
    _, dp = write_trace(tmp_path / "t", {}, trace_rows_from_requests(reqs))
    rows = read_csv(dp)
    cols = rows[0]
    for req, row in zip(reqs, rows[1:]):
        rec = dict(zip(cols, row))
        assert int(rec["input_tokens"]) == req.input_len - req.prefix_length
        assert int(rec["server_input_tokens"]) == req.input_len
        assert rec["streaming"] in ("true", "false")
        assert rec["send_time_us"] == rec["arrival_time_us"] == str(req.arrival_time)


def test_run_export_status_and_chunks():
    reqs = generate_requests(workload(), 3, UNBOUNDED)
    done, timed_out, queued = reqs
    done.state, done.ttft_set, done.first_token_time, done.itl = COMPLETED, True, 500, [10, 20, 30]
    timed_out.state = TIMED_OUT
    rows = trace_rows_from_requests(reqs)
    assert [r["request_id"] for r in rows] == [0, 1, 2]
    assert [r["status"] for r in rows] == ["ok", "timeout", "incomplete"]
    assert rows[0]["first_chunk_time_us"] == done.arrival_time + 500
    assert rows[0]["last_chunk_time_us"] == done.arrival_time + 560
    assert rows[0]["num_chunks"] == 4
    assert (rows[1]["first_chunk_time_us"], rows[1]["last_chunk_time_us"], rows[1]["num_chunks"]) == (0, 0, 0)
    assert rows[0]["output_tokens"] == done.output_len


def write_files(tmp_path, header_text, csv_rows):
    hp, dp = tmp_path / "h.yaml", tmp_path / "d.csv"
    hp.write_text(header_text)
    with open(dp, "w", newline="") as fh:
        csv.writer(fh).writerows(csv_rows)
    return hp, dp


REQUIRED = [c for c in ALL_COLUMNS if c not in OPTIONAL_COLUMNS]


def record(**over):
    rec = {c: "" for c in REQUIRED}
    rec.update({"request_id": "0", "round_index": "0", "prefix_length": "0", "streaming": "false",
                "input_tokens": "10", "output_tokens": "4", "text_tokens": "0", "image_tokens": "0",
                "audio_tokens": "0", "video_tokens": "0", "reason_ratio": "0", "deadline_us": "0",
                "server_input_tokens": "0", "arrival_time_us": "100", "send_time_us": "0",
                "first_chunk_time_us": "0", "last_chunk_time_us": "0", "num_chunks": "0",
                "status": "ok"})
    rec.update({k: str(v) for k, v in over.items()})
    return rec


def rows_of(*records):
    cols = list(records[0])
    return [cols] + [[r[c] for c in cols] for r in records]


def test_replay_rules(tmp_path):
    hp, dp = write_files(tmp_path, "trace_version: 3\nmode: real\n", rows_of(
        record(request_id=7, server_input_tokens=25, send_time_us=150, deadline_us=999),
        record(request_id=3, prefix_group="g", prefix_length=5, server_input_tokens=99,
               arrival_time_us=120, streaming="TRUE", slo_class="standard"),
        record(request_id=4, prefix_group="g", prefix_length=5, arrival_time_us=130, input_tokens=2)))
    hdr, reqs = load_trace(hp, dp)
    assert hdr["mode"] == "real"
    assert [r.id for r in reqs] == ["request_3", "request_4", "request_7"]  # sorted by arrival
    r3, r4, r7 = reqs
    assert (r7.arrival_time, r7.input_len, r7.deadline) == (150, 25, 999)  # send time, server tokens
    assert (r3.input_len, r3.prefix_length, r3.streaming, r3.slo_class) == (15, 5, True, "standard")
    assert r4.input_len == 7 and np.array_equal(r3.input_tokens[:5], r4.input_tokens[:5])
    assert r3.output_len == r3.max_output_len == 4


def test_unknown_column_ignored_and_prefix_length_from_first_nonzero_row(tmp_path):
    """Go parity: an extra CSV column is ignored; a group's prefix length comes from its first
    record with prefix_length > 0, even when an earlier record of the group says 0."""
    hp, dp = write_files(tmp_path, "trace_version: 3\n", rows_of(
        record(request_id=1, prefix_group="g", prefix_length=0, extra_col="x"),
        record(request_id=2, prefix_group="g", prefix_length=6, arrival_time_us=200, extra_col="y")))
    _, (r1, r2) = load_trace(hp, dp)
    assert r1.prefix_length == r2.prefix_length == 6
    assert r1.input_len == 16 and np.array_equal(r1.input_tokens[:6], r2.input_tokens[:6])


def test_strict_header(tmp_path):
    rows = rows_of(record())
    for text, field, frag in [
        ("trace_version: 3\nbogus: 1\n", "bogus", "unknown key"),
        ("server: {model: m, tp: 2}\n", "server.tp", "unknown key"),
        ("mode: simulated\n", "mode", "must be one of"),
        ("trace_version: three\n", "trace_version", "integer"),
        ("time_unit: ms\n", "time_unit", "microseconds"),
        ("goodput_slo_targets: {critical: {ttft: 1}}\n", "goodput_slo_targets.critical.ttft", "unknown key"),
        ("mode: [unclosed\n", "trace-header", "invalid YAML"),
        ("", "trace-header", "empty"),
    ]:
        hp, dp = write_files(tmp_path, text, rows)
        with pytest.raises(ConfigError) as ei:
            load_trace(hp, dp)
        assert ei.value.field == field, (text, str(ei.value))
        assert frag in ei.value.message


def test_real_trace_time_unit_us(tmp_path):
    """Real load-generator traces (data/real/traces) write ``time_unit: us``."""
    hp, dp = write_files(tmp_path, "trace_version: 2\ntime_unit: us\nmode: real\n", rows_of(record()))
    header, reqs = load_trace(hp, dp)
    assert header["time_unit"] == "us" and header["mode"] == "real" and len(reqs) == 1


def test_full_header_accepted(tmp_path):
    header = {
        "trace_version": 3, "time_unit": "microseconds", "created_at": "2026-01-02T03:04:05Z",
        "mode": "replayed", "warm_up_requests": 2, "workload_seed": 42, "workload_spec": "w.yaml",
        "session_context_growth": "accumulate",
        "server": {"type": "vllm", "model": "m", "tensor_parallel": 2, "max_num_seqs": 256,
                   "block_size": 16, "gpu_memory_utilization": 0.9, "max_model_len": 4096},
        "network": {"measured_rtt_ms": 1.5},
        "goodput_slo_targets": {"critical": {"ttft_ms": 100, "itl_ms": 20}},
        "kv_offload": {"tiers": []},
        "observed_kv_metrics": {"source": "prom", "hit_rate": 0.5, "block_hits": 3,
                                "block_queries": 6, "read_time_total": 1.0,
                                "write_time_total": 2.0, "vllm_commit": "abc"},
    }
    hp, dp = write_files(tmp_path, yaml.safe_dump(header), rows_of(record()))
    hdr, reqs = load_trace(hp, dp)
    assert hdr["server"]["tensor_parallel"] == 2 and hdr["warm_up_requests"] == 2
    assert hdr["goodput_slo_targets"] == {"critical": {"ttft_ms": 100.0, "itl_ms": 20.0}}
    assert len(reqs) == 1


def test_csv_errors(tmp_path):
    cases = [
        ([[c for c in REQUIRED if c != "status"]], "trace-data.status", "required column"),
        (rows_of(record(input_tokens="ten")), "trace-data line 2: input_tokens", "integer"),
        (rows_of(record(status="done")), "trace-data line 2: status", "must be one of"),
        (rows_of(record(streaming="maybe")), "trace-data line 2: streaming", "true or false"),
        (rows_of(record(output_tokens=-3)), "trace-data line 2: output_tokens", ">= 0"),
        (rows_of(record(), record()), "trace-data", "duplicate request_id"),
    ]
    for rows, field, frag in cases:
        hp, dp = write_files(tmp_path, "trace_version: 3\n", rows)
        with pytest.raises(ConfigError) as ei:
            load_trace(hp, dp)
        assert ei.value.field == field, str(ei.value)
        assert frag in ei.value.message
    hp, dp = write_files(tmp_path, "trace_version: 3\n", rows_of(record()))
    with pytest.raises(ConfigError) as ei:
        load_trace(hp, tmp_path / "nope.csv")
    assert ei.value.field == "trace-data"


def test_trace_header_for_run(tmp_path):
    from types import SimpleNamespace

    from blis.workload import trace_header_for_run

    spec = workload()
    cfg = SimpleNamespace(
        seed=11, workload=spec, slo_targets={"critical": {"ttft_ms": 50.0, "itl_ms": 0.0, "e2e_ms": 0.0}},
        deployment=SimpleNamespace(model="qwen/qwen3-14b", gpu_memory_utilization=0.9),
        engine=SimpleNamespace(max_num_seqs=128))
    res = SimpleNamespace(cfg=cfg, deployment=SimpleNamespace(tp=2, block_size=16, max_model_len=8192))
    header = trace_header_for_run(res, "generated")
    assert header["workload_seed"] == 11 and header["session_context_growth"] == "accumulate"
    assert header["server"]["tensor_parallel"] == 2 and header["server"]["max_num_seqs"] == 128
    assert header["goodput_slo_targets"] == {"critical": {"ttft_ms": 50.0}}
    reqs = generate_requests(spec, 10, UNBOUNDED)
    hp, dp = write_trace(tmp_path / "run", header, trace_rows_from_requests(reqs))
    hdr, _ = load_trace(hp, dp)
    assert parse_workload_spec(hdr["workload_spec"]) == spec
    replayed = trace_header_for_run(res, "replayed")
    assert "workload_spec" not in replayed and replayed["mode"] == "replayed"


def test_write_trace_rejects_bad_header(tmp_path):
    with pytest.raises(ConfigError) as ei:
        write_trace(tmp_path / "x", {"mode": "generated", "unknown_field": 1}, [])
    assert ei.value.field == "unknown_field"
