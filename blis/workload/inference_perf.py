"""inference-perf workloads (spec §14.12): the ``inference_perf:`` block and raw profiles.

inference-perf's ``shared_prefix`` data sends, per stage, ``int(rate × duration)`` requests
open-loop at the stage rate — evenly spaced for ``load.type: constant``, exponential gaps
rescaled to fill the stage for ``poisson`` — cycling over ``prompts × users`` users; each
request is the user's system prompt (shared by the prompt's users) plus a fresh question.
Multi-turn chat does not change that: the measured experiments send 3000 requests in a
600 s stage at 5 req/s with it on (and prompt lengths stay flat), so it is kept as metadata.
v2 clients cannot express staggered constant arrivals with shared prefixes, so the block is
generated here directly and ``blis convert inference-perf`` emits it as a v2 spec.

Extension (documented in the README): a stage may carry ``input_distribution`` (question
tokens) and ``output_distribution`` to replay measured length distributions, since a real
server stops some requests early and a tokenizer adds tokens to the prompt.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from blis.errors import ConfigError
from blis.request import MAX_TOKEN_ID, Request
from blis.rng import PartitionedRNG

LOAD_TYPES = ("constant", "poisson")
_SP_KEYS = ("num_unique_system_prompts", "num_users_per_system_prompt", "system_prompt_len",
            "question_len", "output_len", "enable_multi_turn_chat")


@dataclass
class Stage:
    rate: float
    duration: float
    input_distribution: Any = None   # DistSpec | None
    output_distribution: Any = None  # DistSpec | None


@dataclass
class InferencePerfSpec:
    stages: list[Stage]
    num_unique_system_prompts: int = 1
    num_users_per_system_prompt: int = 1
    system_prompt_len: int = 0
    question_len: int = 1
    output_len: int = 1
    enable_multi_turn_chat: bool = False
    load_type: str = "constant"

    @property
    def num_users(self) -> int:
        return self.num_unique_system_prompts * self.num_users_per_system_prompt

    def stage_counts(self) -> list[int]:
        return [int(s.rate * s.duration) for s in self.stages]


def _num(v: Any, path: str, *, integer: bool = False, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"),
                                                                                 float("-inf")):
        raise ConfigError(path, f"must be a finite number, got {v!r}")
    if integer and int(v) != v:
        raise ConfigError(path, f"must be an integer, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(path, f"must be > 0, got {v!r}")
    if not positive and v < 0:
        raise ConfigError(path, f"must be >= 0, got {v!r}")
    return int(v) if integer else float(v)


def _mapping(v: Any, path: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(path, f"must be a mapping, got {type(v).__name__}")
    for k in v:
        if k not in allowed:
            raise ConfigError(f"{path}.{k}", f"unknown key; expected one of {', '.join(allowed)}")
    return v


def parse_inference_perf(data: Any, path: str = "inference_perf") -> InferencePerfSpec:
    """The v2 ``inference_perf:`` block: ``stages``, ``shared_prefix``, optional ``load_type``."""
    from blis.workload.spec import _parse_opt_dist

    m = _mapping(data, path, ("stages", "shared_prefix", "load_type"))
    raw_stages = m.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ConfigError(f"{path}.stages", "at least one stage {rate, duration} is required")
    stages = []
    for i, s in enumerate(raw_stages):
        sp = f"{path}.stages[{i}]"
        s = _mapping(s, sp, ("rate", "duration", "input_distribution", "output_distribution"))
        for k in ("rate", "duration"):
            if k not in s:
                raise ConfigError(f"{sp}.{k}", "required")
        stages.append(Stage(_num(s["rate"], f"{sp}.rate"), _num(s["duration"], f"{sp}.duration"),
                            _parse_opt_dist(s.get("input_distribution"), f"{sp}.input_distribution"),
                            _parse_opt_dist(s.get("output_distribution"),
                                            f"{sp}.output_distribution")))
    sp_path = f"{path}.shared_prefix"
    if "shared_prefix" not in m:
        raise ConfigError(sp_path, "required")
    sp = _mapping(m["shared_prefix"], sp_path, _SP_KEYS)
    vals = {}
    for k in _SP_KEYS[:5]:
        if k not in sp:
            raise ConfigError(f"{sp_path}.{k}", "required")
        vals[k] = _num(sp[k], f"{sp_path}.{k}", integer=True, positive=k != "system_prompt_len")
    mt = sp.get("enable_multi_turn_chat", False)
    if not isinstance(mt, bool):
        raise ConfigError(f"{sp_path}.enable_multi_turn_chat", f"must be a boolean, got {mt!r}")
    load_type = m.get("load_type", "constant")
    if load_type not in LOAD_TYPES:
        raise ConfigError(f"{path}.load_type", f"unknown load type {load_type!r}; valid: "
                                               f"{', '.join(LOAD_TYPES)}")
    return InferencePerfSpec(stages=stages, enable_multi_turn_chat=mt, load_type=load_type, **vals)


def is_profile(data: Any) -> bool:
    """A raw inference-perf profile (``data:``/``load:``) rather than a WorkloadSpec."""
    return isinstance(data, dict) and "load" in data and "data" in data and "version" not in data


def profile_to_block(data: dict) -> dict:
    """The ``inference_perf:`` block equivalent to an inference-perf profile's data/load."""
    d = data.get("data")
    if not isinstance(d, dict) or d.get("type", "shared_prefix") != "shared_prefix":
        raise ConfigError("data.type", "only shared_prefix inference-perf data is supported")
    if "shared_prefix" not in d:
        raise ConfigError("data.shared_prefix", "required")
    load = data.get("load")
    if not isinstance(load, dict):
        raise ConfigError("load", "must be a mapping with stages")
    return copy.deepcopy({"stages": load.get("stages"), "shared_prefix": d["shared_prefix"],
                          "load_type": load.get("type", "constant")})


def profile_to_spec_dict(data: dict, seed: int = 42) -> dict:
    """``blis convert inference-perf``: a v2 WorkloadSpec mapping for a profile."""
    block = profile_to_block(data)
    ip = parse_inference_perf(block)
    return {"version": "2", "seed": seed,
            "category": "reasoning" if ip.enable_multi_turn_chat else "language",
            "inference_perf": block}


def _arrivals(ip: InferencePerfSpec, rng: np.random.Generator) -> list[np.ndarray]:
    out, offset = [], 0
    for s, count in zip(ip.stages, ip.stage_counts()):
        dur_us = int(round(s.duration * 1e6))
        if count <= 0:
            out.append(np.empty(0, dtype=np.int64))
        elif ip.load_type == "constant":
            out.append(offset + np.floor(np.arange(count) * (1e6 / s.rate)).astype(np.int64))
        else:
            gaps = rng.exponential(1.0, count)
            t = np.floor(np.cumsum(gaps) / gaps.sum() * dur_us).astype(np.int64)
            out.append(offset + np.concatenate(([0], t[:-1])))
        offset += dur_us
    return out


def generate_inference_perf(ip: InferencePerfSpec, seed: int, max_requests: int, horizon: int,
                            timeout_us: int | None = None) -> list[Request]:
    """Requests of every stage in arrival order, IDs ``request_<i>``; user k mod N sends the k-th."""
    from blis.workload.generator import compute_deadline
    from blis.workload.lengths import make_length_sampler

    rng = PartitionedRNG(seed).for_subsystem("workload-gen")
    prefixes = [rng.integers(0, MAX_TOKEN_ID, size=ip.system_prompt_len, dtype=np.int32)
                for _ in range(ip.num_unique_system_prompts)]
    arr_rng, len_rng, tok_rng = (np.random.default_rng(int(rng.integers(0, 1 << 63)))
                                 for _ in range(3))
    n_users = ip.num_users
    per_prompt = ip.num_users_per_system_prompt
    multi = len(ip.stages) > 1
    requests: list[Request] = []
    k_global = 0
    for si, (stage, times) in enumerate(zip(ip.stages, _arrivals(ip, arr_rng))):
        times = times[times < horizon]
        if max_requests > 0:
            times = times[:max(0, max_requests - len(requests))]
        n = times.shape[0]
        q = np.full(n, ip.question_len, dtype=np.int64)
        o = np.full(n, ip.output_len, dtype=np.int64)
        if stage.input_distribution is not None:
            d = stage.input_distribution
            q = make_length_sampler(d.type, d.params, f"inference_perf.stages[{si}].input_distribution",
                                    d.file).sample(len_rng, n).astype(np.int64)
        if stage.output_distribution is not None:
            d = stage.output_distribution
            o = make_length_sampler(d.type, d.params, f"inference_perf.stages[{si}].output_distribution",
                                    d.file).sample(len_rng, n).astype(np.int64)
        toks = tok_rng.integers(0, MAX_TOKEN_ID, size=int(q.sum() + o.sum()), dtype=np.int32)
        pos = 0
        for j in range(n):
            user = (k_global + j) % n_users
            p, u = divmod(user, per_prompt)
            group = f"prompt-{p}"
            cid = f"stage-{si}-{group}-user-{u}" if multi else f"{group}-user-{u}"
            qi, oi = int(q[j]), int(o[j])
            inp = np.concatenate((prefixes[p], toks[pos:pos + qi]))
            out = toks[pos + qi:pos + qi + oi]
            pos += qi + oi
            t = int(times[j])
            requests.append(Request(f"request_{len(requests)}", inp, out, t,
                                    deadline=compute_deadline(t, timeout_us, False),
                                    slo_class="standard", tenant_id=group, client_id=cid,
                                    prefix_group=group, prefix_length=ip.system_prompt_len))
        k_global += n
    return requests
