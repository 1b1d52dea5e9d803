"""Plain configuration dataclasses, grouped by the module that consumes them.

Validation happens once, where user input is turned into these objects (``blis.config.options``);
the simulation loop trusts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_INT64 = (1 << 63) - 1


@dataclass
class DeploymentConfig:
    """What runs on each instance: model, GPU, parallelism and the latency backend."""

    model: str = ""
    hardware: str = ""                 # "" => defaults.yaml entry for the model
    tp: int = 0                        # 0 => defaults.yaml entry for the model
    dp: int = 1
    latency_model: str = "trained-physics"
    alpha_coeffs: list[float] | None = None   # None => backend defaults
    beta_coeffs: list[float] | None = None
    max_model_len: int = 0             # 0 => auto-derived (spec §7.5)
    gpu_memory_utilization: float = 0.9
    model_config_folder: str = ""      # "" => bundled blis/data/model_configs
    hardware_config: str = ""          # "" => bundled blis/data/hardware_config.json


@dataclass
class EngineConfig:
    """Per-instance vLLM engine knobs (spec §4, §5)."""

    total_kv_blocks: int | None = None  # None => auto-calculated from GPU memory (spec §5.7)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    long_prefill_token_threshold: int = 0
    kv_cpu_blocks: int = 0              # > 0 adds a CPU tier (spec §5.8)
    kv_offload_threshold: float = 0.9   # accepted for compatibility; the reference ignores it
    kv_transfer_bandwidth: float = 100.0     # CPU->GPU reload, tokens per µs
    kv_transfer_base_latency: int = 0        # µs per reloaded block


@dataclass
class PolicyConfig:
    """Cluster-level policies: admission, routing, instance scheduling, preemption (§8–§10)."""

    admission_policy: str = "always-admit"
    admission_latency: int = 0
    routing_latency: int = 0
    token_bucket_capacity: float = 10000.0
    token_bucket_refill_rate: float = 1000.0
    tier_shed_threshold: int = 0
    tier_shed_min_priority: int = 0
    gaie_qd_threshold: float = 5.0
    gaie_kv_threshold: float = 0.8
    # probabilistic admission: per-class {"a": .., "b": ..}; reject with p = min(1, a * sat**b)
    probabilistic_params: dict[str, dict[str, float]] = field(default_factory=dict)
    slo_priorities: dict[str, int] = field(default_factory=dict)
    tenant_budgets: dict[str, float] = field(default_factory=dict)
    routing_policy: str = "round-robin"
    routing_scorers: list[tuple[str, float]] = field(default_factory=list)
    scheduler: str = "fcfs"
    preemption_policy: str = "fcfs"
    snapshot_refresh_interval: int = 50000
    cache_signal_delay: int = 50000


@dataclass
class PDConfig:
    """Prefill/decode disaggregation (spec §12): pool sizes, per-pool hardware, decider, transfer.

    Roles are assigned by instance index: prefill first, then decode, then shared
    (prefill+decode); any remaining instances get no role and receive no traffic.
    """

    prefill_instances: int = 0
    decode_instances: int = 0
    prefill_decode_instances: int = 0
    decider: str = "never"
    prefix_threshold: int = 16
    transfer_bandwidth_gbps: float = 25.0
    transfer_base_latency_ms: float = 0.05
    transfer_contention: bool = False
    prefill_tp: int = 0                # 0 => the main --tp
    decode_tp: int = 0
    prefill_hardware: str = ""         # "" => the main --hardware
    decode_hardware: str = ""

    @property
    def enabled(self) -> bool:
        return self.prefill_instances + self.decode_instances + self.prefill_decode_instances > 0


@dataclass
class DelaySpec:
    """A delay in seconds, sampled as ``max(0, N(mean, stddev))`` (constant when stddev is 0)."""

    mean: float = 0.0
    stddev: float = 0.0


@dataclass
class NodePoolConfig:
    """A pool of identical GPU nodes (spec §13.1); ``cost_per_hour`` is $ per node-hour."""

    name: str
    gpu_type: str
    gpus_per_node: int
    gpu_memory_gib: float
    initial_nodes: int = 0
    min_nodes: int = 0
    max_nodes: int = 0
    provisioning_delay: DelaySpec = field(default_factory=DelaySpec)
    cost_per_hour: float = 0.0


@dataclass
class LifecycleConfig:
    """Instance lifecycle (spec §13.2): loading delay, warm-up and drain behaviour."""

    loading_delay: DelaySpec = field(default_factory=DelaySpec)
    warm_start_initial_instances: bool = False
    warm_up_request_count: int = 0
    warm_up_ttft_factor: float = 1.0
    drain_policy: str = "WAIT"


@dataclass
class AutoscalerConfig:
    """WVA-style autoscaler (spec §13.3); enabled when ``interval_us > 0``."""

    interval_us: int = 0
    scale_up_stabilization_window_us: int = 0
    scale_down_stabilization_window_us: int = 0
    hpa_scrape_delay: DelaySpec = field(default_factory=DelaySpec)
    kv_cache_threshold: float = 0.8
    scale_up_threshold: float = 0.8
    scale_down_boundary: float = 0.4
    avg_input_tokens: float = 512.0


@dataclass
class SimConfig:
    """Everything one simulation run needs. ``workload`` is a ``blis.workload.spec.WorkloadSpec``."""

    seed: int = 42
    horizon: int = MAX_INT64
    num_instances: int = 1
    max_requests: int = 100
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    pd: PDConfig = field(default_factory=PDConfig)
    node_pools: list[NodePoolConfig] = field(default_factory=list)
    lifecycle: LifecycleConfig | None = None
    autoscaler: AutoscalerConfig | None = None
    workload: Any = None
    timeout_override_us: int | None = None  # set for every client when --timeout applies (0 = none)
    # goodput targets: class -> {"ttft_ms": x, "itl_ms": y, "e2e_ms": z} (0 / absent = unchecked)
    slo_targets: dict[str, dict[str, float]] = field(default_factory=dict)
