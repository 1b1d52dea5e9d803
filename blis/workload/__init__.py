"""Workload subsystem: WorkloadSpec parsing, samplers, request generation and TraceV2 I/O (spec §14)."""

from blis.workload.arrivals import ARRIVAL_SAMPLERS, make_arrival_sampler
from blis.workload.generator import client_rates, compute_deadline, generate_requests
from blis.workload.lengths import LENGTH_SAMPLERS, make_length_sampler
from blis.workload.spec import (
    ArrivalSpec,
    ClientSpec,
    CohortSpec,
    DistSpec,
    LifecycleSpec,
    LifecycleWindow,
    MultimodalSpec,
    MultiTurnSpec,
    NetworkSpec,
    ReasoningSpec,
    WorkloadSpec,
    expand_cohorts,
    parse_goodput_targets,
    parse_workload_spec,
    preset_spec,
    spec_to_dict,
    synthesize_distribution_spec,
)
from blis.workload.tracev2 import (
    load_trace,
    parse_trace_header,
    read_trace_rows,
    trace_header_for_run,
    trace_rows_from_requests,
    write_trace,
)

__all__ = [
    "ARRIVAL_SAMPLERS", "LENGTH_SAMPLERS", "ArrivalSpec", "ClientSpec", "CohortSpec", "DistSpec",
    "LifecycleSpec", "LifecycleWindow", "MultiTurnSpec", "MultimodalSpec", "NetworkSpec",
    "ReasoningSpec", "WorkloadSpec", "client_rates", "compute_deadline", "expand_cohorts",
    "generate_requests", "load_trace", "make_arrival_sampler", "make_length_sampler",
    "parse_goodput_targets", "parse_trace_header", "parse_workload_spec", "preset_spec",
    "read_trace_rows", "spec_to_dict", "synthesize_distribution_spec", "trace_header_for_run",
    "trace_rows_from_requests",
    "write_trace",
]
