"""Configuration: the plain dataclasses a run is described by (``schema``), the single declaration
of every option and its validation (``options``), model and hardware files, deployment resolution
and KV sizing, and safe YAML reading.

Everything user-supplied is validated here, once, before anything runs; the simulator trusts it.
"""
