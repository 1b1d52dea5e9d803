"""Model architecture, GPU calibration and bundled defaults (spec §6.4, §7).

Everything here is read from small data files that the policy search resolves thousands of
times, so parsed results are cached and returned as immutable objects.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from blis.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MODEL_CONFIGS_DIR = DATA_DIR / "model_configs"
HARDWARE_CONFIG_PATH = DATA_DIR / "hardware_config.json"
DEFAULTS_PATH = DATA_DIR / "defaults.yaml"

_DTYPE_BYTES = {
    "float32": 4.0, "float16": 2.0, "bfloat16": 2.0,
    "int8": 1.0, "uint8": 1.0, "fp8": 1.0, "int4": 1.0, "nf4": 1.0,
}
_EXPERT_KEYS = ("num_experts", "moe_num_experts", "n_routed_experts", "num_local_experts",
                "num_routed_experts")
_KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "multi_query_group_num")
_NO_ROPE_SCALING_TYPES = frozenset({"su", "longrope", "llama3"})
_WA_BITS_RE = re.compile(r"(?<![a-z0-9])w(\d+)a(\d+)(?![a-z0-9])")
_FP8_TOKEN_RE = re.compile(r"(?<![a-z0-9])fp8(?![a-z0-9])")


@dataclass(frozen=True)
class ModelConfig:
    """The subset of a HuggingFace ``config.json`` the latency and KV models need (spec §7.1).

    ``num_kv_heads`` is already resolved (0 in the file => ``num_heads``). ``bytes_per_param``
    is the compute/activation dtype; ``weight_bytes_per_param`` is the quantization-aware weight
    precision (§7.2). Rope scaling is flattened into scalars so the config stays hashable.
    """

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int = 0
    bytes_per_param: float = 2.0
    intermediate_size: int = 0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    interleave_moe_layer_step: int = 0
    intermediate_size_mlp: int = 0
    hidden_act: str = ""
    head_dim: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    first_k_dense_replace: int = 0
    max_position_embeddings: int = 0
    rope_scaling_type: str = ""
    rope_scaling_factor: float = 0.0
    rope_original_max_position_embeddings: int = 0
    model_type: str = ""
    tie_word_embeddings: bool = False
    weight_bytes_per_param: float = 0.0
    name: str = ""

    @property
    def is_moe(self) -> bool:
        return self.num_experts >= 2

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def effective_weight_bytes_per_param(self) -> float:
        """Weight precision, falling back to the compute dtype when no quantization was found."""
        return self.weight_bytes_per_param if self.weight_bytes_per_param > 0 else self.bytes_per_param


@dataclass(frozen=True)
class HardwareSpec:
    """One GPU's calibration entry from ``hardware_config.json`` (spec §6.4)."""

    name: str
    tflops_peak: float
    bw_peak_tbs: float
    tflops_fp8: float = 0.0
    mfu_prefill: float = 0.0
    mfu_decode: float = 0.0
    memory_gib: float = 0.0


def _int(raw: dict, key: str) -> int:
    """Integer value of ``key``; null, missing, booleans and non-numbers read as 0."""
    v = raw.get(key)
    if isinstance(v, bool) or v is None:
        return 0
    if isinstance(v, (int, float)):
        return int(v) if math.isfinite(v) else 0
    return 0


def _float(raw: dict, key: str) -> float:
    v = raw.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0.0
    return float(v) if math.isfinite(v) else 0.0


def _dtype_bytes(raw: dict) -> float:
    dtype = raw.get("torch_dtype") or raw.get("dtype") or ""
    return _DTYPE_BYTES.get(str(dtype).lower(), 0.0)


def _numeric(v: Any) -> float:
    """A number given as int/float or numeric string; 0 when absent or unparsable."""
    if isinstance(v, bool) or v is None:
        return 0.0
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return 0.0


def _quantization_bytes(raw: dict) -> float:
    """Tier 1 of §7.2: weight bytes/param declared by ``quantization_config`` (0 if none)."""
    qc = raw.get("quantization_config")
    if not isinstance(qc, dict):
        return 0.0
    bits = _numeric(qc.get("bits"))
    if bits > 0:
        return bits / 8.0
    method = str(qc.get("quant_method") or "").lower()
    if method == "fp8":
        return 1.0
    if method == "compressed-tensors":
        groups = qc.get("config_groups")
        if isinstance(groups, dict):
            for key in sorted(groups):
                group = groups[key]
                weights = group.get("weights") if isinstance(group, dict) else None
                if isinstance(weights, dict):
                    nb = _numeric(weights.get("num_bits"))
                    if nb > 0:
                        return nb / 8.0
                break
    return 0.0


def _name_quantization_bytes(name: str) -> float:
    """Tier 2 of §7.2: ``w<bits>a<bits>`` or an ``fp8`` token in the model name."""
    lowered = name.lower()
    m = _WA_BITS_RE.search(lowered)
    if m and int(m.group(1)) > 0:
        return int(m.group(1)) / 8.0
    if _FP8_TOKEN_RE.search(lowered):
        return 1.0
    return 0.0


def parse_model_config(raw: dict, name: str = "") -> ModelConfig:
    """Build a ``ModelConfig`` from a parsed HF ``config.json`` dict (spec §7.1, §7.2)."""
    if not isinstance(raw, dict):
        raise ConfigError("model", f"config.json for '{name}' is not a JSON object")
    merged = dict(raw)
    text = raw.get("text_config")
    if isinstance(text, dict):
        merged.update(text)

    heads = _int(merged, "num_attention_heads")
    kv_heads = next((_int(merged, k) for k in _KV_HEAD_KEYS if _int(merged, k) != 0), 0) or heads
    intermediate = _int(merged, "intermediate_size") or _int(merged, "ffn_hidden_size")
    experts = next((_int(merged, k) for k in _EXPERT_KEYS if _int(merged, k) >= 2), 0)
    moe_inter = _int(merged, "moe_intermediate_size")
    shared = _int(merged, "shared_expert_intermediate_size")
    if shared == 0:
        shared = _int(merged, "n_shared_experts") * (moe_inter or intermediate)

    rope = merged.get("rope_scaling")
    rope_type, rope_factor, rope_orig = "", 0.0, 0
    if isinstance(rope, dict):
        rope_type = str(rope.get("type") or rope.get("rope_type") or "")
        rope_factor = _float(rope, "factor")
        rope_orig = _int(rope, "original_max_position_embeddings")

    bpp = _dtype_bytes(merged)
    wbpp = _quantization_bytes(merged) or _name_quantization_bytes(name) or bpp
    return ModelConfig(
        num_layers=_int(merged, "num_hidden_layers"),
        hidden_size=_int(merged, "hidden_size"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        vocab_size=_int(merged, "vocab_size"),
        bytes_per_param=bpp,
        intermediate_size=intermediate,
        num_experts=experts,
        num_experts_per_tok=_int(merged, "num_experts_per_tok"),
        moe_intermediate_size=moe_inter,
        shared_expert_intermediate_size=shared,
        interleave_moe_layer_step=_int(merged, "interleave_moe_layer_step"),
        intermediate_size_mlp=_int(merged, "intermediate_size_mlp"),
        hidden_act=str(merged.get("hidden_act") or ""),
        head_dim=_int(merged, "head_dim"),
        kv_lora_rank=_int(merged, "kv_lora_rank"),
        qk_rope_head_dim=_int(merged, "qk_rope_head_dim"),
        first_k_dense_replace=_int(merged, "first_k_dense_replace"),
        max_position_embeddings=_int(merged, "max_position_embeddings"),
        rope_scaling_type=rope_type,
        rope_scaling_factor=rope_factor,
        rope_original_max_position_embeddings=rope_orig,
        model_type=str(merged.get("model_type") or ""),
        tie_word_embeddings=bool(merged.get("tie_word_embeddings") or False),
        weight_bytes_per_param=wbpp,
        name=name,
    )


def model_config_path(model: str, folder: str = "") -> Path:
    """Where the config for ``model`` lives: ``folder`` if given, else the bundled directory.

    An explicit folder may hold ``config.json`` directly or one sub-folder per model.
    """
    short = model.lower().rsplit("/", 1)[-1]
    if folder:
        direct = Path(folder) / "config.json"
        return direct if direct.is_file() else Path(folder) / short / "config.json"
    return MODEL_CONFIGS_DIR / short / "config.json"


@lru_cache(maxsize=256)
def _load_model_config_cached(model: str, folder: str) -> ModelConfig:
    path = model_config_path(model, folder)
    if not path.is_file():
        raise ConfigError("model", f"no model config for '{model}' (looked in {path}); "
                                   "pass --model-config-folder")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("model", f"cannot parse model config {path}: {exc}") from None
    mc = parse_model_config(raw, model)
    if mc.num_layers <= 0 or mc.hidden_size <= 0 or mc.num_heads <= 0:
        raise ConfigError("model", f"model config {path} lacks num_hidden_layers/hidden_size/"
                                   "num_attention_heads")
    return mc


def load_model_config(model: str, folder: str = "") -> ModelConfig:
    """Parse the HF config for ``model`` (lower-cased id). Never fetches from the network."""
    if not model:
        raise ConfigError("model", "a model is required")
    return _load_model_config_cached(model.lower(), folder or "")


@lru_cache(maxsize=32)
def _hardware_table(path: str) -> dict[str, HardwareSpec]:
    p = Path(path) if path else HARDWARE_CONFIG_PATH
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("hardware-config", f"cannot read {p}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("hardware-config", f"{p} is not a JSON object")
    table = {}
    for gpu, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        table[gpu] = HardwareSpec(
            name=gpu,
            tflops_peak=_float(entry, "TFlopsPeak"),
            bw_peak_tbs=_float(entry, "BwPeakTBs"),
            tflops_fp8=_float(entry, "TFlopsFP8"),
            mfu_prefill=_float(entry, "mfuPrefill"),
            mfu_decode=_float(entry, "mfuDecode"),
            memory_gib=_float(entry, "MemoryGiB"),
        )
    return table


def known_gpus(path: str = "") -> list[str]:
    """GPU names available in the (bundled or given) hardware calibration file."""
    return sorted(_hardware_table(path or ""))


def load_hardware(gpu: str, path: str = "") -> HardwareSpec:
    """Look up ``gpu`` (exact name, then case-insensitive) in the calibration file."""
    table = _hardware_table(path or "")
    spec = table.get(gpu)
    if spec is None:
        spec = next((v for k, v in table.items() if k.lower() == gpu.lower()), None)
    if spec is None:
        raise ConfigError("hardware", f"unknown GPU '{gpu}'; known: {', '.join(sorted(table))}")
    return spec


@lru_cache(maxsize=8)
def _defaults_cached(path: str) -> dict:
    p = Path(path) if path else DEFAULTS_PATH
    # the bundled file is trusted and read by every run: libyaml's parser is ~10x faster there
    # (same documents); a user's file keeps the pure-Python parser and its error messages
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader) if not path else yaml.SafeLoader
    try:
        data = yaml.load(p.read_text(), Loader=loader)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("defaults-filepath", f"cannot read {p}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("defaults-filepath", f"{p} is not a YAML mapping")
    return data


def load_defaults(path: str = "") -> dict:
    """The parsed ``defaults.yaml`` (bundled unless ``path``); a private copy per call."""
    return copy.deepcopy(_defaults_cached(path or ""))


def defaults_cached(path: str = "") -> dict:
    """Shared, cached ``defaults.yaml`` for hot internal callers. Do not mutate the result."""
    return _defaults_cached(path or "")


def derive_max_model_len(mc: ModelConfig) -> int:
    """Context limit from ``max_position_embeddings`` and rope scaling (spec §7.5); 0 if unknown."""
    base = mc.max_position_embeddings
    factor = mc.rope_scaling_factor
    if ("gemma3" in mc.model_type.lower() or factor <= 1.0
            or mc.rope_scaling_type in _NO_ROPE_SCALING_TYPES):
        return base
    if mc.rope_scaling_type == "yarn" and mc.rope_original_max_position_embeddings > 0:
        base = mc.rope_original_max_position_embeddings
    return int(base * factor)
