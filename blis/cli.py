"""`blis` command line: run, replay, search, report.

Every run flag is declared from ``blis.options.OPTIONS`` with a suppressed default, so the
options dict holds exactly the flags the user typed — the information the policy-bundle
precedence rule needs. Bad input ends with one ``error: <field>: <message>`` line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from blis.errors import ConfigError
from blis.options import ALIASES, OPTIONS, flag

_HELP = {
    "seed": "master random seed (default 42)",
    "horizon": "simulation horizon in microseconds (default unbounded)",
    "num_instances": "number of serving instances (default 1)",
    "model": "model id, e.g. qwen/qwen2.5-7b-instruct (required)",
    "hardware": "GPU type: H100, A100-80, A100-SXM, L40S (default from defaults.yaml)",
    "tp": "tensor parallelism per instance (default from defaults.yaml)",
    "latency_model": "trained-physics (default) or roofline",
    "total_kv_blocks": "KV blocks per instance (default: computed from GPU memory)",
    "admission_policy": "always-admit, token-bucket, tier-shed, gaie-legacy, reject-all, probabilistic",
    "routing_policy": "round-robin, least-loaded, weighted, always-busiest",
    "routing_scorers": "weighted-routing scorers 'name:weight,...'",
    "scheduler": "fcfs, priority-fcfs, sjf, reverse-priority",
    "preemption_policy": "fcfs or priority",
    "policy_config": "policy bundle YAML (admission/routing/scheduler/preemption)",
    "workload": "distribution (default) or a preset: chatbot, contentgen, summarization, multidoc",
    "workload_spec": "workload spec YAML (v2) or an inference-perf profile; overrides --workload",
    "coefficients": "trained-physics coefficients file written by `blis calibrate`",
    "rate": "arrival rate in requests/s (distribution and preset modes)",
    "num_requests": "number of requests to generate (default 100)",
    "timeout": "per-request timeout in seconds (default 300; negative disables)",
    "slo_ttft": "goodput TTFT targets, e.g. 'critical=100ms,standard=500ms'",
    "prefill_instances": "P/D: instances in the prefill pool (the first P instances)",
    "decode_instances": "P/D: instances in the decode pool (the next D instances)",
    "prefill_decode_instances": "P/D: instances serving both roles (the next S instances)",
    "pd_decider": "P/D: when to disaggregate: never (default), always, prefix-threshold",
    "pd_prefix_threshold": "P/D prefix-threshold: disaggregate when uncached input tokens exceed this (default 16)",
    "pd_transfer_bandwidth": "P/D: KV transfer bandwidth in GB/s (default 25)",
    "pd_transfer_base_latency": "P/D: fixed KV transfer latency in ms (default 0.05)",
    "pd_transfer_contention": "P/D: concurrent transfers share the bandwidth (default false)",
    "prefill_tp": "P/D: tensor parallelism of prefill-pool instances (default --tp)",
    "decode_tp": "P/D: tensor parallelism of decode-pool and shared instances (default --tp)",
    "prefill_hardware": "P/D: GPU type of prefill-pool instances (default --hardware)",
    "decode_hardware": "P/D: GPU type of decode-pool and shared instances (default --hardware)",
    "kv_cpu_blocks": "CPU KV tier size in blocks; 0 (default) = GPU only",
    "kv_offload_threshold": "accepted for compatibility, in [0, 1]; has no effect (as in BLIS)",
    "kv_transfer_bandwidth": "CPU->GPU KV reload bandwidth in tokens/us (default 100)",
    "kv_transfer_base_latency": "fixed CPU->GPU reload latency per block in us (default 0)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def _add_sim_flags(p: argparse.ArgumentParser) -> None:
    for name, (kind, default) in OPTIONS.items():
        shown = "unbounded" if name == "horizon" else default
        extra = {"nargs": "?", "const": "true"} if kind is bool else {}
        p.add_argument(f"--{flag(name)}", dest=name, default=argparse.SUPPRESS,
                       metavar=name.split("_")[-1].upper(),
                       help=_HELP.get(name, f"(default {shown})"), **extra)
    for alias, target in ALIASES.items():
        p.add_argument(f"--{flag(alias)}", dest=target, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    p.add_argument("--metrics-path", default="", help="write cluster metrics + per-request rows as JSON")
    p.add_argument("--trace-output", default="", help="export the run as TraceV2 (<prefix>.yaml/.csv)")
    p.add_argument("--results-path", default="", help="write per-request results JSON array")


def _sim_options(ns: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(ns).items() if k in OPTIONS}


def _write_outputs(ns, res, mode: str) -> None:
    from blis.jsonfmt import dumps

    if ns.metrics_path:
        data = dict(res.cluster)
        data["cache_hit_rate"] = res.cache_hit_rate()
        data["requests"] = res.request_rows()
        Path(ns.metrics_path).write_text(dumps(data) + "\n")
    if ns.results_path:
        rows = []
        for row in res.request_rows():
            if row["e2e_ms"] > 0:
                rows.append({"request_id": int(row["requestID"].rsplit("_", 1)[1]),
                             "ttft_us": round(row["ttft_ms"] * 1000),
                             "e2e_us": round(row["e2e_ms"] * 1000),
                             "input_tokens": row["num_prefill_tokens"],
                             "output_tokens": row["num_decode_tokens"],
                             "itl_mean_us": row["itl_ms"] * 1000})
                rows[-1].update({k: row[k] for k in ("slo_class", "model") if row.get(k)})
        Path(ns.results_path).write_text(dumps(rows) + "\n")
    if ns.trace_output:
        from blis.workload.tracev2 import trace_header_for_run, trace_rows_from_requests, write_trace

        write_trace(ns.trace_output, trace_header_for_run(res, mode),
                    trace_rows_from_requests(res.sim.arrived))


def _wants_requests(ns) -> bool:
    """Per-request records are read only by these output files."""
    return bool(ns.metrics_path or ns.results_path or ns.trace_output)


def cmd_run(ns) -> int:
    from blis.options import build_config
    from blis.simulation import run_simulation

    cfg = build_config(_sim_options(ns))
    res = run_simulation(cfg, keep_requests=_wants_requests(ns))
    sys.stdout.write(res.render_stdout())
    _write_outputs(ns, res, "generated")
    return 0


def cmd_replay(ns) -> int:
    from blis.options import build_config
    from blis.simulation import run_simulation
    from blis.workload.tracev2 import load_trace

    cfg = build_config(_sim_options(ns), replay=True)
    _header, requests = load_trace(ns.trace_header, ns.trace_data, seed=cfg.seed)
    if cfg.max_requests > 0:
        requests = requests[:cfg.max_requests]
    if "horizon" not in vars(ns):  # Go: 2 x the latest injection time, 600 s if all arrive at 0
        latest = max((r.arrival_time for r in requests), default=0)
        cfg.horizon = 2 * latest if latest > 0 else 600_000_000
    res = run_simulation(cfg, requests=requests, keep_requests=_wants_requests(ns))
    sys.stdout.write(res.render_stdout())
    _write_outputs(ns, res, "replayed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="blis", description="LLM inference cluster simulator and deployment search")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="generate a workload and simulate it")
    _add_sim_flags(run)
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("replay", help="simulate the requests of a TraceV2 trace")
    _add_sim_flags(rep)
    rep.add_argument("--trace-header", required=True, help="TraceV2 header YAML")
    rep.add_argument("--trace-data", required=True, help="TraceV2 data CSV")
    rep.set_defaults(func=cmd_replay)
    try:
        from search.cli import register
    except ImportError:
        register = None
    if register is not None:
        register(sub)
    from blis.calibrate_cli import register as register_calibrate
    register_calibrate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    try:
        return ns.func(ns)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("BLIS_DEBUG"):
            raise
        sys.stderr.write(f"error: internal: {type(exc).__name__}: {exc} (set BLIS_DEBUG=1 for a traceback)\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
