"""One instance's engine: the wait queue and its orderings, vLLM-style batch formation with chunked
prefill and preemption, the KV-cache block manager (prefix caching, optional CPU tier) and the step
loop that asks the latency model for each step's duration.

May import: blis.request, blis.latency, blis.results, blis.errors. Never the cluster or the fleet:
the cluster drives an instance through ``Instance.inject`` / ``step`` and reads its counters.

``kv_cache`` and ``fast_path`` are compiled at install time when a C compiler is available (see
``blis/__init__.py``).
"""
