"""GPU nodes grouped in pools: first-fit placement, provisioning, and the cost of the run (§13.1).

A node costs its pool's ``cost_per_hour`` from the moment it is requested (initial nodes: time 0)
until it is released, whether or not instances run on it — the bill a cloud would send. The
reference simulator never provisions nodes on its own and prints no cost; here a scale-up that
finds no free GPUs provisions a node (up to ``max_nodes``), and a node left empty by a scale-down
is released (down to ``min_nodes``), so the autoscaler's decisions show up in the bill.
"""

from __future__ import annotations

from dataclasses import replace

from blis.config.deployment import resolve_deployment
from blis.config.kv_capacity import calculate_kv_blocks
from blis.config.model_config import derive_max_model_len
from blis.errors import ConfigError

NODE_PROVISIONING, NODE_READY, NODE_TERMINATED = "Provisioning", "Ready", "Terminated"
US_PER_HOUR = 3600e6


def sample_delay(spec, rng) -> int:
    """``max(0, N(mean, stddev))`` seconds as integer µs; no draw when the delay is constant."""
    secs = spec.mean if spec.stddev <= 0 else max(0.0, float(rng.normal(spec.mean, spec.stddev)))
    return int(secs * 1e6)


class Node:
    __slots__ = ("id", "pool", "state", "free", "allocated", "start", "end")

    def __init__(self, node_id: str, pool, state: str, start: int):
        self.id = node_id
        self.pool = pool
        self.state = state
        self.free = pool.gpus_per_node
        self.allocated: dict[int, int] = {}   # instance index -> GPUs
        self.start = start
        self.end = -1


class NodePools:
    """Node inventory of every pool plus the cost ledger (node start/end times)."""

    def __init__(self, pools: list, rng):
        self.pools = pools
        self.rng = rng
        self.nodes: list[Node] = []
        self._next = {p.name: 0 for p in pools}
        self.peak_nodes = 0
        for pool in pools:
            for _ in range(pool.initial_nodes):
                self._new_node(pool, NODE_READY, 0)

    def _new_node(self, pool, state: str, t: int) -> Node:
        idx = self._next[pool.name]
        self._next[pool.name] = idx + 1
        node = Node(f"{pool.name}-{idx}", pool, state, t)
        self.nodes.append(node)
        live = sum(1 for n in self.nodes if n.state != NODE_TERMINATED)
        self.peak_nodes = max(self.peak_nodes, live)
        return node

    def live(self, pool) -> int:
        return sum(1 for n in self.nodes if n.pool is pool and n.state != NODE_TERMINATED)

    def has_gpu(self, gpu_type: str) -> bool:
        return any(p.gpu_type == gpu_type for p in self.pools)

    def place(self, index: int, gpu_type: str, tp: int) -> Node | None:
        """First fit: pools in config order, Ready nodes in creation order."""
        for pool in self.pools:
            if pool.gpu_type != gpu_type:
                continue
            for node in self.nodes:
                if node.pool is pool and node.state == NODE_READY and node.free >= tp:
                    node.free -= tp
                    node.allocated[index] = tp
                    return node
        return None

    def release(self, node: Node, index: int) -> None:
        node.free += node.allocated.pop(index)

    def spare_provisioning(self, gpu_type: str) -> int:
        """GPUs of nodes still provisioning: room already on its way."""
        return sum(n.free for n in self.nodes
                   if n.state == NODE_PROVISIONING and n.pool.gpu_type == gpu_type)

    def provision(self, gpu_type: str, t: int) -> tuple[Node, int] | None:
        """A new node in the first pool of ``gpu_type`` below ``max_nodes``, and its ready time."""
        for pool in self.pools:
            if pool.gpu_type == gpu_type and self.live(pool) < pool.max_nodes:
                node = self._new_node(pool, NODE_PROVISIONING, t)
                return node, t + sample_delay(pool.provisioning_delay, self.rng)
        return None

    def maybe_release(self, node: Node, t: int) -> None:
        """Release an empty node if its pool stays at or above ``min_nodes``."""
        if not node.allocated and node.state == NODE_READY and self.live(node.pool) > node.pool.min_nodes:
            node.state = NODE_TERMINATED
            node.end = t

    def cost(self, t_end: int) -> tuple[float, float]:
        """(GPU-hours, dollars) of every node over [start, min(end, t_end)]."""
        gpu_hours = dollars = 0.0
        for n in self.nodes:
            end = t_end if n.end < 0 else min(n.end, t_end)
            hours = max(0, end - n.start) / US_PER_HOUR
            gpu_hours += hours * n.pool.gpus_per_node
            dollars += hours * n.pool.cost_per_hour
        return gpu_hours, dollars


def pool_deployment(cfg, pool, tp: int):
    """The deployment of an instance placed on ``pool``: its GPU type, and KV blocks sized from
    the pool's ``gpu_memory_gib`` unless ``--total-kv-blocks`` was given (INV-P2-1)."""
    dep = resolve_deployment(replace(cfg.deployment, hardware=pool.gpu_type, tp=tp), cfg.engine)
    if cfg.engine.total_kv_blocks is not None or dep.hardware.memory_gib == pool.gpu_memory_gib:
        return dep
    hw = replace(dep.hardware, memory_gib=pool.gpu_memory_gib)
    blocks = calculate_kv_blocks(dep.model_config, hw, tp, dep.dp, dep.block_size,
                                 float(cfg.deployment.gpu_memory_utilization),
                                 dep.weight_bytes_per_param)
    if blocks <= 0:
        raise ConfigError(f"node_pools.{pool.name}.gpu_memory_gib",
                          f"no KV blocks fit for '{dep.model}' in {pool.gpu_memory_gib:g} GiB "
                          f"with tp={tp}")
    max_len = dep.max_model_len
    if cfg.deployment.max_model_len == 0:
        max_len = min(derive_max_model_len(dep.model_config), blocks * dep.block_size)
    elif -(-max_len // dep.block_size) > blocks:
        raise ConfigError("max-model-len", f"{max_len} tokens do not fit the {blocks} KV blocks "
                                           f"of node pool '{pool.name}'")
    return replace(dep, total_kv_blocks=blocks, max_model_len=max_len)
