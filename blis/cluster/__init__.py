"""The cluster around the instances: the event loop, admission, routing (policies and scorers),
the router's stale snapshots of instance state, and SLO classes.

May import: blis.engine, blis.fleet (through the hooks it hands them), blis.request, blis.config,
blis.results. Admission and routing read only snapshots and request metadata (INV-7, INV-9).
"""
