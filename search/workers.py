"""Ray workers for trials: starting Ray, the trial task, honest timeouts, fault classification.

The per-trial timeout is enforced inside the worker with an interval timer started when the
trial begins executing, so it measures the trial and nothing else: not the queue, not the start
of a replacement worker after an earlier cancellation. The driver keeps a generous backstop for
a worker that no longer answers at all.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: extra seconds the driver grants beyond the in-worker timeout before it cancels the task
BACKSTOP_GRACE_S = 60.0
#: how long a ``--ray-address`` may take to accept a TCP connection before it is called unreachable
PROBE_TIMEOUT_S = 3.0


@dataclass
class TrialError:
    """What a worker returns instead of an Evaluation when the simulation raised or timed out."""

    message: str


@dataclass
class SystemFault:
    """The worker itself failed (died, OOM-killed, node lost): the trial may be retried."""

    message: str


class _TrialTimeout(BaseException):
    """Raised by the timer inside a trial; a BaseException so simulator code cannot swallow it."""


def evaluate(objective, params: dict, timeout: float | None):
    """Run one trial in this (worker) process; never raises for what the trial itself did."""
    timed = bool(timeout) and threading.current_thread() is threading.main_thread()
    if timed:
        def expire(signum, frame):
            raise _TrialTimeout

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return objective.evaluate(params)
    except _TrialTimeout:
        return TrialError(f"timed out after {timeout:g} s")
    except Exception as e:  # the trial fails, the study goes on
        return TrialError(f"{type(e).__name__}: {e}")
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def probe_ray_address(address: str | None) -> None:
    """Refuse an unreachable ``--ray-address`` in seconds: ``ray.init`` would wait 60 s+ for it."""
    if not address or address in ("auto", "local"):
        return
    from blis.errors import ConfigError

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError("ray-address", f"{address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, or ray://HOST:10001)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConfigError("ray-address", f"cannot reach a Ray cluster at {address}: {reason} "
                          f"(is `ray start --head` running there?)") from None


def start_ray(workers: int, address: str | None) -> bool:
    """Start (or join) Ray quietly unless the caller already did; True when we own it."""
    import ray

    if ray.is_initialized():
        return False
    import blis
    import objectives
    import search

    packages = [Path(m.__file__).parent for m in (blis, objectives, search)]
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    # Ray's processes inherit an ignored SIGINT, so a Ctrl-C in the terminal (sent to the whole
    # process group) reaches only the driver, which then shuts Ray down in order.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    inherited = os.environ.get("PYTHONPATH")
    try:
        if address:
            ray.init(address=address, runtime_env={"py_modules": [str(p) for p in packages]}, **quiet)
        else:
            # The code reaches local workers through the environment the Ray processes inherit,
            # not a runtime_env: a task with its own runtime_env cannot use the workers Ray
            # starts ahead with ray.init, so the first trial would wait ~2 s for a new one.
            roots = [str(p.parent) for p in packages] + ([inherited] if inherited else [])
            os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots))
            # address="local": always a private instance, even when another local Ray cluster runs
            ray.init(address="local", num_cpus=workers, **quiet)
    finally:
        signal.signal(signal.SIGINT, previous)
        if inherited is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = inherited
    return True


def _evaluate_on_node(objective, params: dict, timeout: float | None):
    """``evaluate`` as a Ray task: the outcome and the id of the node that computed it."""
    import ray

    return evaluate(objective, params, timeout), ray.get_runtime_context().get_node_id()


def remote_evaluate():
    import ray

    # max_retries=0: the driver retries system faults itself, once, and records it on the trial
    return ray.remote(num_cpus=1, max_retries=0)(_evaluate_on_node)


def fetch(ref) -> tuple[object, str | None]:
    """The trial's outcome and node id, or a SystemFault (no node) when the worker could not deliver one."""
    import ray

    try:
        return ray.get(ref)
    except Exception as e:  # worker crash, OOM kill, node death, ...
        text = str(e).strip()
        return SystemFault(f"{type(e).__name__}: {text.splitlines()[-1] if text else repr(e)}"), None


def settled(ref, ready, deadlines: "Deadlines", timeout: float | None) -> tuple[object, str | None] | None:
    """The outcome and node of an in-flight task that answered (in ``ready``) or outlived its
    backstop (cancelled, a TrialError); None while it is still running."""
    if ref in ready:
        outcome = fetch(ref)
    elif deadlines.expired(ref):
        import ray

        ray.cancel(ref, force=True)
        outcome = TrialError(f"timed out after {timeout:g} s (the worker stopped answering and was cancelled)"), None
    else:
        return None
    deadlines.drop(ref)
    return outcome


def recorded(outcome) -> tuple[object, dict]:
    """What a finished evaluation stores: a NaN objective value makes it a TrialError; an
    Evaluation gives its user attrs (metrics, spread, seconds, cpu_seconds)."""
    if not isinstance(outcome, TrialError) and any(math.isnan(v) for v in outcome.values):
        outcome = TrialError(f"objective value is NaN: {outcome.values}")
    if isinstance(outcome, TrialError):
        return outcome, {"error": outcome.message}
    attrs = {"metrics": outcome.metrics}
    if outcome.spread:
        attrs["spread"] = outcome.spread
    attrs["seconds"] = round(outcome.seconds, 3)
    attrs["cpu_seconds"] = round(outcome.cpu_seconds, 3)
    return outcome, attrs


class Deadlines:
    """Driver-side backstop: a task that has not answered long after its timeout is cancelled."""

    def __init__(self, timeout: float | None):
        self.limit = timeout + max(BACKSTOP_GRACE_S, timeout) if timeout else None
        self.started: dict = {}

    def add(self, ref) -> None:
        self.started[ref] = time.monotonic()

    def drop(self, ref) -> None:
        self.started.pop(ref, None)

    def wait_s(self, cap: float) -> float:
        if not self.limit or not self.started:
            return cap
        return max(0.05, min(cap, min(self.started.values()) + self.limit - time.monotonic()))

    def expired(self, ref) -> bool:
        return bool(self.limit) and time.monotonic() - self.started[ref] >= self.limit
