"""Study files: YAML -> validated ``StudySpec``, with every error reported before any trial runs.

Errors are ``blis.errors.ConfigError`` naming the offending field (``parameters.tp.low``,
``objectives[1].direction`` ...); the CLI prints them as one ``error: <field>: <message>`` line.
See the README ("Study file reference") for the file format.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from blis.config.yamlsafe import load_yaml_file
from blis.errors import ConfigError
from objectives.constraints import Constraint, parse_constraint
from objectives.metrics import MAXIMIZE, MINIMIZE, MetricRef, parse_metric
from objectives.objective import Objective
from objectives.paths import PD_REST, SCALAR_OPTIONS, SLO_OPTIONS, STRUCTURED_OPTIONS, apply_params, check_target
from objectives.pricing import price_table
from search.fidelity import FidelitySpec
from search.robust import RobustSpec
from search.samplers import DEFAULT as DEFAULT_SAMPLER
from search.samplers import Space, parse_sampler
from search.space import Parameter, parse_parameter

TOP_LEVEL_KEYS = (
    "name description seed sampler base pd_split parameters objectives constraints seeds baseline references pricing trials trial_timeout "
    "robust fidelity"
).split()
_DEPLOYMENT_TARGETS = {"model", "hardware", "tp", "dp", "num_instances", "prefill_instances", "decode_instances",
                       "prefill_decode_instances", "prefill_tp", "decode_tp", "prefill_hardware", "decode_hardware"}
_MAX_STATIC_COMBOS = 10_000


@dataclass
class StudySpec:
    name: str
    base: dict
    parameters: list[Parameter]
    objectives: list[tuple[MetricRef, str]]
    constraints: list[Constraint] = field(default_factory=list)
    description: str = ""
    seed: int = 0
    sampler: str = DEFAULT_SAMPLER
    sampler_options: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    baseline: dict = field(default_factory=dict)
    #: name -> params of further reference points, evaluated first like the baseline
    references: dict = field(default_factory=dict)
    pricing: dict = field(default_factory=dict)
    trials: int | None = None
    trial_timeout: float | None = None
    robust: RobustSpec = field(default_factory=RobustSpec)
    fidelity: FidelitySpec | None = None

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    def minimised(self, values) -> list[float]:
        """Objective values as a minimisation vector (maximised objectives negated), the form
        dominance, ranks and hypervolumes are computed on."""
        return [v if d == "minimize" else -v for v, (_, d) in zip(values, self.objectives)]

    @property
    def metric_names(self) -> list[str]:
        return [ref.name for ref, _ in self.objectives]

    def objective(self, simulate: Callable[[dict], dict] | None = None) -> Objective:
        return Objective(self.base, self.objectives, self.constraints, self.seeds, self.pricing, simulate)

    def to_dict(self) -> dict:
        """A self-contained, re-parseable form (stored with the study so reports need no YAML file)."""
        d = {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "sampler": {"type": self.sampler, **self.sampler_options},
            "base": self.base,
            "parameters": {p.name: p.to_dict() for p in self.parameters},
            "objectives": [{"metric": ref.name, "direction": d} for ref, d in self.objectives],
            "constraints": [c.to_dict() for c in self.constraints],
            "pricing": self.pricing,
        }
        if self.seeds:
            d["seeds"] = self.seeds
        if self.baseline:
            d["baseline"] = self.baseline
        if self.robust.explicit:
            d["robust"] = self.robust.to_dict()
        if self.fidelity:
            d["fidelity"] = self.fidelity.to_dict()
        if self.references:
            d["references"] = self.references
        return d

    def fingerprint(self) -> str:
        """Hash of everything that changes what a trial means; budget and timeouts are excluded."""
        d = self.to_dict()
        keep = {k: d.get(k) for k in ("base", "parameters", "objectives", "constraints", "seeds", "pricing")}
        if self.fidelity:  # only when set, so studies without it keep their fingerprint
            keep["fidelity"] = d["fidelity"]
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_study(path: str | Path, probe: Callable[[dict], object] | None = None) -> StudySpec:
    """Read and validate a study file; ``probe`` (e.g. ``blis.config.options.build_config``) vets option values."""
    path = Path(path)
    raw = load_yaml_file(path, "study")
    if not isinstance(raw, dict):
        raise ConfigError("study", f"{path} must contain a mapping of study keys")
    spec = parse_study(raw, base_dir=path.parent, default_name=path.stem)
    if probe is not None:
        probe_space(spec, probe)
    return spec


def parse_study(raw: dict, base_dir: Path | None = None, default_name: str = "study") -> StudySpec:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(str(key), f"unknown top-level key (expected one of: {', '.join(TOP_LEVEL_KEYS)})")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError("name", f"must be a non-empty string without '/', got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description", "must be a string")
    base = _parse_base(raw.get("base", {}), base_dir)
    if "pd_split" in raw:
        _apply_pd_split(raw["pd_split"], base, raw.get("parameters"))
    parameters = _parse_parameters(raw.get("parameters"), base)
    objectives = _parse_objectives(raw.get("objectives"))
    constraints = _parse_list(raw.get("constraints", []), "constraints", parse_constraint)
    refs = [ref for ref, _ in objectives] + [c.ref for c in constraints]
    _check_metric_scope(refs, objectives, constraints, base, parameters)
    spec = StudySpec(
        name=name,
        description=description.strip(),
        base=base,
        parameters=parameters,
        objectives=objectives,
        constraints=constraints,
        seed=_int(raw.get("seed", 0), "seed"),
        seeds=_parse_seeds(raw.get("seeds")),
        pricing=price_table(raw.get("pricing")),
        trials=_positive(raw.get("trials"), "trials", int),
        trial_timeout=_positive(raw.get("trial_timeout"), "trial_timeout", float),
        robust=_parse_robust(raw.get("robust", None), "robust" in raw),
        fidelity=_parse_fidelity(raw.get("fidelity"), parameters),
    )
    spec.sampler, spec.sampler_options = parse_sampler(raw.get("sampler"), Space(parameters))
    spec.baseline = _parse_baseline(raw.get("baseline"), parameters)
    spec.references = _parse_references(raw.get("references"), parameters)
    check_pricing_names(raw.get("pricing") or {}, base, parameters)
    _check_static_feasibility(spec)
    return spec


def _int(v: object, field: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(field, f"must be an integer, got {v!r}")
    return v


def _positive(v: object, field: str, kind: type):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) or not v > 0 or not math.isfinite(v):
        raise ConfigError(field, f"must be a finite positive {'integer' if kind is int else 'number'}, got {v!r}")
    return kind(v)


def _parse_list(raw: object, field: str, parse_item) -> list:
    if not isinstance(raw, list):
        raise ConfigError(field, "must be a list")
    return [parse_item(item, f"{field}[{i}]") for i, item in enumerate(raw)]


def _load_inline(value: object, field: str, base_dir: Path | None) -> object:
    """policy_config / workload_spec given as a file path are read in, so parameters can edit them."""
    if not isinstance(value, str):
        if not isinstance(value, dict):
            raise ConfigError(field, "must be a mapping or a path to a YAML file")
        return value
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists():
        raise ConfigError(field, f"file not found: {path} (relative paths are relative to the study file)")
    loaded = load_yaml_file(path, field)
    if not isinstance(loaded, dict):
        raise ConfigError(field, f"{path} must contain a mapping")
    return loaded


def _parse_base(raw: object, base_dir: Path | None) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError("base", "must be a mapping of blis run options (flag names with dashes -> underscores)")
    base = {}
    for key, value in raw.items():
        if key not in SCALAR_OPTIONS and key not in STRUCTURED_OPTIONS:
            raise ConfigError(f"base.{key}", "unknown blis run option (use flag names with dashes -> underscores)")
        if key in ("policy_config", "workload_spec"):
            value = _load_inline(value, f"base.{key}", base_dir)
        base[key] = value
    return base


def _apply_pd_split(raw: object, base: dict, parameters: object) -> None:
    """``pd_split: {total_instances: N}``: N instances, the prefill pool sized by the
    ``prefill_instances`` parameter and every other instance decoding."""
    if not isinstance(raw, dict) or set(raw) != {"total_instances"}:
        raise ConfigError("pd_split", "must be a mapping {total_instances: N}")
    total = raw["total_instances"]
    if isinstance(total, bool) or not isinstance(total, int) or total < 2:
        raise ConfigError("pd_split.total_instances", f"must be an integer >= 2, got {total!r}")
    params = parameters if isinstance(parameters, dict) else {}
    for key in ("num_instances", "decode_instances"):
        if key in base or key in params:
            raise ConfigError("pd_split", f"sets {key} itself; remove it from base/parameters")
    if "prefill_instances" not in params and "prefill_instances" not in base:
        raise ConfigError("pd_split", "needs a prefill_instances parameter (the size of the prefill pool)")
    spec = params.get("prefill_instances")
    if isinstance(spec, dict) and spec.get("type") == "int":
        low, high = spec.get("low"), spec.get("high")
        if isinstance(low, int) and isinstance(high, int) and not 1 <= low <= high <= total - 1:
            raise ConfigError("parameters.prefill_instances",
                              f"must stay within [1, {total - 1}] so both pools are non-empty (got [{low}, {high}])")
    base["num_instances"] = total
    base["decode_instances"] = PD_REST


def _parse_parameters(raw: object, base: dict) -> list[Parameter]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("parameters", "must be a non-empty mapping of target path -> parameter spec")
    params: dict[str, Parameter] = {}
    for name, spec in raw.items():
        field_name = f"parameters.{name}"
        check_target(str(name), base, field_name)
        params[name] = parse_parameter(str(name), spec, field_name, params)
    return list(params.values())


def _parse_objectives(raw: object) -> list[tuple[MetricRef, str]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("objectives", "must be a non-empty list of {metric, direction}")
    out: list[tuple[MetricRef, str]] = []
    for i, item in enumerate(raw):
        field_name = f"objectives[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(field_name, "must be a mapping {metric: NAME, direction: minimize|maximize}")
        unknown = set(item) - {"metric", "direction"}
        if unknown:
            raise ConfigError(f"{field_name}.{sorted(unknown)[0]}", "unknown key (expected metric, direction)")
        ref = parse_metric(item.get("metric"), f"{field_name}.metric")
        direction = item.get("direction", ref.metric.direction)
        if direction not in (MINIMIZE, MAXIMIZE):
            raise ConfigError(f"{field_name}.direction", f"must be minimize or maximize, got {direction!r}")
        if any(r.name == ref.name for r, _ in out):
            raise ConfigError(f"{field_name}.metric", f"{ref.name} is already an objective")
        out.append((ref, direction))
    return out


def _workload_tiers(base: dict, parameters: list[Parameter]) -> set[str] | None:
    """SLO tiers the workload will contain, or None when that is decided by a parameter."""
    if any(p.name == "workload_spec" or p.name.endswith(".slo_class") for p in parameters):
        return None
    spec = base.get("workload_spec")
    if not isinstance(spec, dict):
        return set()
    clients = spec.get("clients") or []
    if not isinstance(clients, list) or spec.get("cohorts"):
        return None
    return {str(c.get("slo_class") or "default") for c in clients if isinstance(c, dict)}


def _has_slo_targets(base: dict, parameters: list[Parameter]) -> bool:
    spec = base.get("workload_spec")
    return (
        any(base.get(o) for o in SLO_OPTIONS)
        or (isinstance(spec, dict) and bool(spec.get("goodput_slo_targets")))
        or any(p.name.split(".")[0] in SLO_OPTIONS or ".goodput_slo_targets" in p.name for p in parameters)
    )


def _check_metric_scope(refs, objectives, constraints, base: dict, parameters: list[Parameter]) -> None:
    fields = [f"objectives[{i}].metric" for i in range(len(objectives))]
    fields += [f"constraints[{i}].metric" for i in range(len(constraints))]
    tiers = _workload_tiers(base, parameters)
    for ref, field_name in zip(refs, fields):
        if ref.slo_class and tiers is not None and ref.slo_class not in tiers:
            have = ", ".join(sorted(tiers)) or "none (no workload_spec with slo_class clients)"
            raise ConfigError(field_name, f"SLO tier {ref.slo_class!r} is not in the workload (tiers: {have})")
        if ref.metric.name in ("slo_attainment", "goodput_rps") and not _has_slo_targets(base, parameters):
            raise ConfigError(
                field_name,
                f"{ref.metric.name} needs SLO targets: set base.slo_ttft / slo_itl / slo_e2e or workload_spec.goodput_slo_targets",
            )


def _parse_seeds(raw: object) -> list[int]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        raise ConfigError("seeds", "must be a non-empty list of integers")
    seeds = [_int(s, f"seeds[{i}]") for i, s in enumerate(raw)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", "duplicate seed")
    return seeds


def _parse_robust(raw: object, given: bool) -> RobustSpec:
    """``robust: false | true | {seeds: K | [s1, s2, ...], candidates: N}`` (see search/robust.py)."""
    if not given:
        return RobustSpec()
    if isinstance(raw, bool):
        return RobustSpec(enabled=raw, explicit=True)
    if not isinstance(raw, dict):
        raise ConfigError("robust", "must be false, true or a mapping {seeds: K or [seed, ...], candidates: N}")
    for key in raw:
        if key not in ("seeds", "candidates"):
            raise ConfigError(f"robust.{key}", "unknown key (expected seeds, candidates)")
    spec = RobustSpec(explicit=True)
    seeds = raw.get("seeds", None)
    if isinstance(seeds, list):
        spec.seeds = [_int(v, f"robust.seeds[{i}]") for i, v in enumerate(seeds)]
        if len(spec.seeds) < 2 or len(set(spec.seeds)) != len(spec.seeds):
            raise ConfigError("robust.seeds", f"must list at least 2 distinct seeds (a 95 % interval needs 2), got {seeds!r}")
    elif seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
            raise ConfigError("robust.seeds", f"must be an integer >= 2 (a 95 % interval needs 2 seeds) or a list of seeds, got {seeds!r}")
        spec.count = seeds
    if "candidates" in raw:
        spec.candidates = _positive(raw["candidates"], "robust.candidates", int)
    return spec


def _parse_fidelity(raw: object, parameters: list[Parameter]) -> FidelitySpec | None:
    """``fidelity: {num_requests: [n0, n1, ..., full], share: f}`` (see search/fidelity.py)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "num_requests" not in raw:
        raise ConfigError("fidelity", "must be a mapping {num_requests: [low, ..., full], share: fraction}")
    for key in raw:
        if key not in ("num_requests", "share"):
            raise ConfigError(f"fidelity.{key}", "unknown key (expected num_requests, share)")
    levels = raw["num_requests"]
    if not isinstance(levels, list) or len(levels) < 2:
        raise ConfigError("fidelity.num_requests", f"must be a list of at least 2 request counts, got {levels!r}")
    levels = [_int(v, f"fidelity.num_requests[{i}]") for i, v in enumerate(levels)]
    if levels[0] < 1 or any(b <= a for a, b in zip(levels, levels[1:])):
        raise ConfigError("fidelity.num_requests", f"must be positive and strictly increasing, got {levels}")
    share = raw.get("share")
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1):
        raise ConfigError("fidelity.share", f"must be a fraction in (0, 1], got {share!r}")
    for p in parameters:
        if p.name in ("num_requests", "workload_spec", "workload_spec.num_requests"):
            raise ConfigError("fidelity", f"the fidelity sets num_requests, so it cannot be combined with the {p.name} parameter")
    return FidelitySpec(levels, None if share is None else float(share))


def _parse_baseline(raw: object, parameters: list[Parameter], where: str = "baseline") -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(where, "must be a mapping of parameter -> value")
    names = {p.name for p in parameters}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{where}.{key}", "is not a parameter of this study")
    baseline = {}
    for p in parameters:
        if not p.active(baseline):
            if p.name in raw:
                raise ConfigError(f"{where}.{p.name}", f"is inactive for this point (when: {dict(p.when)})")
            continue
        if p.name not in raw:
            raise ConfigError(f"{where}.{p.name}", "missing: a reference point sets every active parameter")
        if not p.contains(raw[p.name]):
            raise ConfigError(f"{where}.{p.name}", f"{raw[p.name]!r} is outside the parameter's range/choices")
        baseline[p.name] = raw[p.name]
    return baseline


def _parse_references(raw: object, parameters: list[Parameter]) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("references", "must be a mapping of name -> {parameter: value}")
    return {str(name): _parse_baseline(point, parameters, f"references.{name}") for name, point in raw.items()}


def _check_static_feasibility(spec: StudySpec) -> None:
    """Reject bounds on static metrics (cost, GPUs) that no point of the space can meet.

    Cost is monotone in instances, TP and price, so the extremes of the deployment parameters
    (every choice, both ends of each range) contain the cheapest point.
    """
    static = [(i, c) for i, c in enumerate(spec.constraints) if c.ref.metric.static]
    uses_cost = any(ref.metric.static for ref, _ in spec.objectives) or static
    if not uses_cost:
        return
    deploy = [p for p in spec.parameters if p.name in _DEPLOYMENT_TARGETS]
    if math.prod(len(p.extremes()) for p in deploy) > _MAX_STATIC_COMBOS:
        return
    points = [apply_params(spec.base, dict(zip([p.name for p in deploy], combo))) for combo in itertools.product(*(p.extremes() for p in deploy))]
    for options in points:
        for ref, _ in spec.objectives:
            if ref.metric.static:
                ref.static_value(options, spec.pricing)
    for i, c in static:
        values = [c.ref.static_value(o, spec.pricing) for o in points]
        if not any(c.satisfied(v) for v in values):
            best = min(values) if c.max is not None else max(values)
            raise ConfigError(f"constraints[{i}]", f"infeasible space: no configuration meets {c.name} (best possible {best:g})")


def check_pricing_names(pricing: dict, base: dict, parameters: list[Parameter]) -> None:
    """Every priced GPU is one the simulator knows or the study uses (a typo prices nothing;
    a used GPU the simulator does not know is the probe's to reject)."""
    from blis.config.model_config import _hardware_table

    known = set(_hardware_table(str(base.get("hardware_config") or "")))
    keys = ("hardware", "prefill_hardware", "decode_hardware")
    known |= {str(base[k]) for k in keys if base.get(k)}
    known |= {str(c) for p in parameters if p.name in keys for c in p.choices}
    for gpu in pricing:
        if gpu not in known:
            raise ConfigError(f"pricing.{gpu}", f"unknown GPU type; known: {', '.join(sorted(known))}")


_STORAGE_SCHEMES = ("sqlite", "mysql", "postgresql", "postgres", "oracle", "mssql")


def check_run_paths(out: str | None, storage: str | None) -> None:
    """``--out`` and ``--storage`` are checked before the study starts (no half-created study)."""
    if out and Path(out).exists() and not Path(out).is_dir():
        raise ConfigError("out", f"{out} exists and is not a directory")
    if storage and "://" in storage:
        scheme = storage.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme not in _STORAGE_SCHEMES:
            raise ConfigError("storage", f"unsupported URL scheme {scheme!r}; use a journal file path "
                                         f"or one of {', '.join(_STORAGE_SCHEMES)}")
    elif storage and Path(storage).is_dir():
        raise ConfigError("storage", f"{storage} is a directory; give a journal file path")


def check_report_dir(out_dir: str | Path) -> None:
    """``blis report`` reads, never creates: the directory must hold a readable search.json."""
    meta = Path(out_dir) / "search.json"
    if not meta.is_file():
        raise ConfigError("out_dir", f"{out_dir} holds no search (missing search.json)")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError("out_dir", f"{meta} is not valid JSON: {str(e)[:120]}") from None
    if not isinstance(data, dict) or not {"study_name", "storage"} <= set(data):
        raise ConfigError("out_dir", f"{meta} lacks study_name/storage")


def _blames(error: ConfigError, p: Parameter) -> bool:
    f = str(error.field or "").lstrip("-").replace("-", "_")
    root = p.name.split(".")[0]
    return bool(f) and (f in (root, p.name) or f.startswith(root + ".") or p.name.endswith("." + f))


def probe_space(spec: StudySpec, probe: Callable[[dict], object]) -> None:
    """Let the simulator's own option validation vet the space before any trial runs.

    Every extreme of every parameter is tried twice: with the other parameters at their first
    extremes and at their last. A value is blamed only when it fails in both contexts and the
    simulator names that parameter's option, so combinations that merely fail together (a big
    model on one small GPU) stay legal trial failures.
    """
    contexts = []
    for pick in (0, -1):
        point: dict = {}
        for p in spec.parameters:
            if p.active(point):
                point[p.name] = p.extremes()[pick]
        contexts.append(point)
    errors: list[ConfigError] = []
    tried = 0

    def attempt(params: dict) -> ConfigError | None:
        nonlocal tried
        tried += 1
        try:
            probe(apply_params(spec.base, params))
        except ConfigError as e:
            errors.append(e)
            return e
        return None

    for point in contexts:
        attempt(point)
    for p in spec.parameters:
        for value in p.extremes():
            blamed = []
            for point in contexts:
                params = {**point, p.name: value}
                if p.active(params):
                    e = attempt(params)
                    blamed.append(e if e is not None and _blames(e, p) else None)
            if blamed and all(blamed):
                raise ConfigError(f"parameters.{p.name}", f"value {value!r} is rejected by the simulator: {blamed[0].message}")
    if len(errors) == tried:
        e = errors[0]
        key = str(e.field or "").replace("-", "_")
        where = f"base.{key}" if key in spec.base else (e.field or "parameters")
        raise ConfigError(where, f"infeasible space: the simulator rejects every probed configuration, e.g. {e.message}")
