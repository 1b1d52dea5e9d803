"""BLIS: a deterministic discrete-event simulator of LLM inference serving clusters."""

__version__ = "0.1.0"
