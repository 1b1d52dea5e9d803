"""The coefficients file ``blis calibrate`` writes and ``--coefficients`` reads: a small YAML
document holding the trained-physics alpha and beta vectors (and what they were fitted on)."""

from __future__ import annotations

from pathlib import Path

import yaml

from blis.errors import ConfigError


def write_coeffs(path: str, coeffs: dict, meta: dict | None = None) -> None:
    doc = {"latency_model": "trained-physics", "alpha_coeffs": coeffs["alpha"],
           "beta_coeffs": coeffs["beta"]}
    if meta:
        doc["fitted_on"] = meta
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))


def read_coeffs(path: str) -> dict:
    """A coefficients file written by ``blis calibrate`` → {"alpha": [...], "beta": [...]}."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError("coefficients", f"{path}: {e}") from None
    if not isinstance(doc, dict) or "alpha_coeffs" not in doc or "beta_coeffs" not in doc:
        raise ConfigError("coefficients", f"{path}: needs alpha_coeffs and beta_coeffs")
    return {"alpha": list(doc["alpha_coeffs"]), "beta": list(doc["beta_coeffs"])}
