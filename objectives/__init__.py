"""Objectives: a simulation config built from trial parameters, scored by named metrics.

``metrics`` holds the metric registry (keyed by the names used in study YAML files),
``pricing``/``cost`` the $/hour model, ``constraints`` the feasibility bounds, ``paths`` the
dotted parameter targets, and ``objective`` ties them into one evaluable object.
"""

from objectives.constraints import Constraint
from objectives.metrics import METRICS, MetricRef, parse_metric
from objectives.objective import Evaluation, Objective

__all__ = ["METRICS", "Constraint", "Evaluation", "MetricRef", "Objective", "parse_metric"]
