"""A fast analytic stand-in for ``blis.api.simulate`` used by the search/objectives tests.

Queueing-flavoured formulas give the search real trade-offs (more GPUs: lower latency, higher
cost; more shedding: lower critical TTFT, less throughput) in microseconds per call. A few
option values trigger failure modes on purpose.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from blis.errors import ConfigError

SPEED = {"H100": 1.0, "A100-80": 0.6, "A100-SXM": 0.6, "L40S": 0.35}
FAIL_SEQS = 13  # max_num_seqs value that makes the fake raise
SLOW_SEQS = 7  # max_num_seqs value that makes the fake hang (for trial timeouts)
CRASH_ONCE_SEQS = 11  # the worker process dies (SIGKILL) the first time it sees this value
CRASH_ALWAYS_SEQS = 17  # the worker process dies every time
MARKERS_ENV = "BLIS_FAKE_MARKERS"  # directory where CRASH_ONCE_SEQS remembers it crashed


def _shed_fraction(options: dict, load: float) -> float:
    admission = (options.get("policy_config") or {}).get("admission") or {}
    policy = options.get("admission_policy") or admission.get("policy", "always-admit")
    if policy == "probabilistic":
        p = (admission.get("probabilistic") or {}).get("sheddable") or {}
        return min(1.0, float(p.get("a", 0.0)) * load ** float(p.get("b", 1.0)))
    if policy == "gaie-legacy":
        return 1.0 if load >= float(admission.get("gaie_qd_threshold", 5.0)) / 5.0 else 0.0
    return 0.0


def simulate(options: dict) -> dict:
    hw = options.get("hardware", "H100")
    if hw not in SPEED:
        raise ConfigError("hardware", f"unknown GPU type {hw!r}")
    if options.get("max_num_seqs") == FAIL_SEQS:
        raise RuntimeError("injected simulator failure")
    if options.get("max_num_seqs") == CRASH_ALWAYS_SEQS:
        os.kill(os.getpid(), signal.SIGKILL)
    if options.get("max_num_seqs") == CRASH_ONCE_SEQS:
        marker = Path(os.environ[MARKERS_ENV]) / f"crashed-{options.get('num_instances')}"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    if options.get("max_num_seqs") == SLOW_SEQS:
        time.sleep(120)
    n, tp = int(options.get("num_instances", 1)), int(options.get("tp", 1))
    spec = options.get("workload_spec") or {}
    rate = float(spec.get("aggregate_rate", options.get("rate", 10.0)))
    num = int(options.get("num_requests", spec.get("num_requests", 100)))
    capacity = 10.0 * SPEED[hw] * tp**0.7 * n
    offered_load = rate / capacity
    shed = _shed_fraction(options, offered_load)
    served_rate = rate * (1 - shed / 3)
    rho = served_rate / capacity
    ttft = 20.0 / (1 - rho) if rho < 0.95 else 400.0 * rho
    ttft *= 1 + 1024 / int(options.get("max_num_batched_tokens", 2048))  # small token budgets slow prefill
    seed_jitter = 1 + (int(options.get("seed", 0)) % 7) / 100
    completed = round(num * (1 - shed / 3))
    backlog = min(completed, round(num * (rho - 1.2))) if rho > 1.2 else 0
    per_class = {}
    for tier, scale, shed_share in (("critical", 0.8, 0), ("standard", 1.0, 0), ("sheddable", 1.2, shed)):
        injected = num // 3
        per_class[tier] = {
            "injected": injected,
            "completed": round(injected * (1 - shed_share)),
            "rejected": injected - round(injected * (1 - shed_share)),
            "ttft_mean_ms": ttft * scale * seed_jitter,
            "ttft_p90_ms": 1.5 * ttft * scale * seed_jitter,
            "ttft_p99_ms": 2 * ttft * scale * seed_jitter,
            "itl_mean_ms": 5.0 * scale,
            "e2e_mean_ms": 100 * scale + ttft,
            "e2e_p90_ms": 150 * scale + ttft,
            "e2e_p99_ms": 200 * scale + ttft,
            "slo_attainment": 1 / (1 + rho),
            "goodput_rps": served_rate / 3 / (1 + rho),
        }
    cluster = {
        "completed_requests": completed - backlog,
        "still_queued": backlog,
        "still_running": 0,
        "injected_requests": completed,
        "total_input_tokens": completed * 200,
        "total_output_tokens": completed * 100,
        "vllm_estimated_duration_s": num / rate,
        "responses_per_sec": served_rate,
        "tokens_per_sec": served_rate * 100,
        "timed_out_requests": 0,
        "dropped_unservable": 0,
        "preemption_count": 0,
        "length_capped_requests": 0,
        "scheduling_delay_p99_ms": ttft / 2,
    }
    for kind, base in (("ttft", ttft * seed_jitter), ("itl", 5.0), ("e2e", 100 + ttft)):
        for stat, mult in (("mean", 1.0), ("p90", 1.5), ("p95", 1.7), ("p99", 2.0)):
            cluster[f"{kind}_{stat}_ms"] = base * mult
    return {
        "cluster": cluster,
        "num_requests": num,
        "rejected_requests": num - completed,
        "routing_rejections": 0,
        "shed_by_tier": {"sheddable": num - completed} if shed else {},
        "per_class": per_class,
        "deployment": {"model": options.get("model"), "hardware": hw, "tp": tp, "num_instances": n},
    }


WORKLOAD = {
    "version": "2",
    "seed": 7,
    "aggregate_rate": 30,
    "num_requests": 300,
    "clients": [
        {
            "id": tier,
            "slo_class": tier,
            "rate_fraction": 1,
            "arrival": {"process": "poisson"},
            "input_distribution": {"type": "gaussian", "params": {"mean": 256, "std_dev": 64, "min": 16, "max": 1024}},
            "output_distribution": {"type": "gaussian", "params": {"mean": 64, "std_dev": 16, "min": 4, "max": 256}},
        }
        for tier in ("critical", "standard", "sheddable")
    ],
}


def study_dict(**overrides) -> dict:
    """A small capacity-vs-latency study over the fake simulator."""
    d = {
        "name": "fake_capacity",
        "seed": 3,
        "sampler": {"type": "nsgaii", "population_size": 6},
        "base": {"model": "qwen/qwen2.5-7b-instruct", "workload_spec": WORKLOAD},
        "parameters": {
            "num_instances": {"type": "int", "low": 1, "high": 6},
            "hardware": {"type": "categorical", "choices": ["H100", "A100-80", "L40S"]},
            "max_num_batched_tokens": {"type": "int", "low": 256, "high": 8192, "log": True},
        },
        "objectives": [
            {"metric": "ttft_p90_ms@critical", "direction": "minimize"},
            {"metric": "gpu_cost_per_hour"},
        ],
        "constraints": [{"metric": "backlog", "max": 0}],
        "baseline": {"num_instances": 1, "hardware": "L40S", "max_num_batched_tokens": 2048},
    }
    d.update(overrides)
    return d
