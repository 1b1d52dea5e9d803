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

# TraceV2 I/O (csv, datetime) is for replay and trace export only: loaded on first use, so a
# plain `blis run` does not import it.
_TRACEV2 = frozenset({"load_trace", "parse_trace_header", "read_trace_rows", "trace_header_for_run",
                      "trace_rows_from_requests", "write_trace"})


def __getattr__(name: str):
    if name in _TRACEV2:
        from blis.workload import tracev2

        return getattr(tracev2, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
