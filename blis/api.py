"""Programmatic entry point used by ``objectives/`` and ``search/``.

``simulate(options)`` takes the same option names as ``blis run`` flags (dashes -> underscores,
e.g. ``{"model": "qwen/qwen2.5-7b-instruct", "num_instances": 4, "routing_policy": "weighted",
"rate": 200, "num_requests": 2000}``; a ``policy_config`` value may be a path or an inline dict
in the policy-bundle schema; a ``workload_spec`` value may be a path or an inline dict in the
WorkloadSpec schema) and returns a JSON-able dict:

    {
      "cluster": {...MetricsOutput fields: completed_requests, ttft_p99_ms, e2e_mean_ms, ...},
      "instances": [{...MetricsOutput per instance...}],
      "num_requests": int,            # generated requests offered to the cluster
      "rejected_requests": int,       # admission rejections
      "routing_rejections": int,
      "shed_by_tier": {class: int},
      "per_class": {class: {"injected", "completed", "rejected", "ttft_mean_ms", "ttft_p90_ms",
                            "ttft_p99_ms", "itl_mean_ms", "e2e_mean_ms", "e2e_p90_ms",
                            "e2e_p99_ms", "slo_attainment", "goodput_rps"}},
      "deployment": {"model", "hardware", "tp", "num_instances", "total_kv_blocks",
                     "max_model_len"},
    }

Bad options raise ``blis.errors.ConfigError``.
"""

from __future__ import annotations


def simulate(options: dict) -> dict:
    from blis.config.options import build_config
    from blis.simulation import run_simulation

    cfg = build_config(options)
    return run_simulation(cfg, keep_requests=False).to_dict()
