"""`blis` command line: run, replay, search, report.

Every run flag is declared from ``blis.config.options.OPTIONS`` with a suppressed default, so the
options dict holds exactly the flags the user typed — the information the policy-bundle
precedence rule needs. Bad input ends with one ``error: <field>: <message>`` line and exit 2.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from blis.config.options import ALIASES, DECLARATIONS, OPTIONS, OUTPUT_DECLARATIONS, flag
from blis.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    """No prefix abbreviations (``--num-request`` is not ``--num-requests``); errors are one
    ``error: <field>: <message>`` line, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def format_help(self):
        for action in self._actions:
            opt = getattr(action, "declared", None)
            if opt is not None and opt.registry and "one of:" not in (action.help or ""):
                action.help = f"{action.help}; one of: {', '.join(opt.choices())}"
        return super().format_help()

    def error(self, message):
        sys.stderr.write(f"error: {_argparse_field(message)}\n")
        raise SystemExit(2)


def _argparse_field(message: str) -> str:
    """argparse's messages rephrased to name the flag at fault first."""
    if message.startswith("unrecognized arguments: "):
        first = message.split(": ", 1)[1].split()[0]
        return f"{first.lstrip('-').split('=')[0]}: unknown flag {first.split('=')[0]} (see --help)"
    if message.startswith("argument "):
        names, _, rest = message[len("argument "):].partition(": ")
        return f"{names.split('/')[-1].lstrip('-')}: {rest}"
    if message.startswith("the following arguments are required: "):
        first = message.split(": ", 1)[1].split(",")[0].strip()
        return f"{first.lstrip('-')}: is required"
    return f"command: {message}"


def _add_sim_flags(p: argparse.ArgumentParser, outputs: bool = True) -> None:
    for opt in DECLARATIONS:
        extra = {"nargs": "?", "const": "true"} if opt.kind is bool else {}
        shown = opt.default_text()
        action = p.add_argument(opt.flag, dest=opt.name, default=argparse.SUPPRESS,
                                metavar=opt.name.split("_")[-1].upper(),
                                help=opt.help + (f" (default {shown})" if shown else ""), **extra)
        action.declared = opt
    for alias, target in ALIASES.items():
        p.add_argument(f"--{flag(alias)}", dest=target, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    for opt in OUTPUT_DECLARATIONS if outputs else ():
        p.add_argument(opt.flag, dest=opt.name, default="", metavar="PATH", help=opt.help)


def _sim_options(ns: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(ns).items() if k in OPTIONS}


def _write_outputs(ns, res, mode: str) -> None:
    from blis.results.jsonfmt import dumps

    if ns.metrics_path:
        data = dict(res.cluster)
        data["cache_hit_rate"] = res.cache_hit_rate()
        data["requests"] = res.request_rows()
        Path(ns.metrics_path).write_text(dumps(data) + "\n")
    if ns.results_path:
        rows = []
        for row in res.request_rows():
            if row["e2e_ms"] > 0:
                rows.append({"request_id": int(row["requestID"].rsplit("_", 1)[1]),
                             "ttft_us": round(row["ttft_ms"] * 1000),
                             "e2e_us": round(row["e2e_ms"] * 1000),
                             "input_tokens": row["num_prefill_tokens"],
                             "output_tokens": row["num_decode_tokens"],
                             "itl_mean_us": row["itl_ms"] * 1000})
                rows[-1].update({k: row[k] for k in ("slo_class", "model") if row.get(k)})
        Path(ns.results_path).write_text(dumps(rows) + "\n")
    if ns.trace_output:
        from blis.workload.tracev2 import trace_header_for_run, trace_rows_from_requests, write_trace

        write_trace(ns.trace_output, trace_header_for_run(res, mode),
                    trace_rows_from_requests(res.sim.arrived))


def _check_output_paths(ns) -> None:
    """Output files are checked before simulating, not after a long run."""
    targets = [("metrics-path", ns.metrics_path), ("results-path", ns.results_path)]
    if ns.trace_output:
        targets += [("trace-output", ns.trace_output + ".yaml"), ("trace-output", ns.trace_output + ".csv")]
    for field, path in targets:
        if path:
            check_writable(path, field)


def check_writable(path: str, field: str) -> None:
    """``path`` can be created or overwritten as a file (its directory exists and is writable)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(field, f"{path} is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(field, f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(field, f"{path} is not writable")


def _wants_requests(ns) -> bool:
    """Per-request records are read only by these output files."""
    return bool(ns.metrics_path or ns.results_path or ns.trace_output)


@contextmanager
def _gc_paused():
    """A process's first run: start-up (imports, config) allocates objects that live for the
    whole run, so cyclic-GC passes over them find nothing (~10 ms of a 100-request run). They
    go straight to the permanent generation (``gc.freeze``; merely re-enabled, the young
    generation's first pass would walk them all), as the simulation's own objects do in
    ``run_simulation``, whose ``gc.unfreeze`` at the end releases both. Once a simulation has
    run in this process there may be its garbage to collect, and imports are done: no pause."""
    pause = gc.isenabled() and "blis.simulation" not in sys.modules
    if pause:
        gc.disable()
    try:
        yield
        if pause:
            gc.freeze()
    finally:
        if pause:
            gc.enable()


def cmd_run(ns) -> int:
    with _gc_paused():
        from blis.config.options import build_config

        cfg = build_config(_sim_options(ns))
        _check_output_paths(ns)
        from blis.simulation import run_simulation  # numpy and the engine: only for a valid run

    res = run_simulation(cfg, keep_requests=_wants_requests(ns))
    sys.stdout.write(res.render_stdout())
    _write_outputs(ns, res, "generated")
    return 0


def cmd_replay(ns) -> int:
    with _gc_paused():
        from blis.config.options import build_config

        cfg = build_config(_sim_options(ns), replay=True)
        _check_output_paths(ns)
        from blis.simulation import run_simulation
        from blis.workload.tracev2 import load_trace

    _header, requests = load_trace(ns.trace_header, ns.trace_data, seed=cfg.seed)
    if "horizon" not in vars(ns):  # Go: 2 x the latest injection time, 600 s if all arrive at 0
        latest = max((r.arrival_time for r in requests), default=0)
        cfg.horizon = 2 * latest if latest > 0 else 600_000_000
    res = run_simulation(cfg, requests=requests, keep_requests=_wants_requests(ns))
    sys.stdout.write(res.render_stdout())
    _write_outputs(ns, res, "replayed")
    return 0


class _ListAction(argparse.Action):
    """``--list-models`` / ``--list-hardware``: print the bundled names and exit 0."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from blis.config.deployment import model_defaults
        from blis.config.model_config import defaults_cached, model_config_path

        if option_string == "--list-hardware":
            from blis.config.model_config import _hardware_table

            for name, hw in sorted(_hardware_table("").items()):
                sys.stdout.write(f"{name:12} {hw.memory_gib:g} GiB  {hw.tflops_peak:g} TFLOPS\n")
        else:
            from blis.config.model_config import MODEL_CONFIGS_DIR

            listed = set()
            for model in sorted(defaults_cached().get("defaults") or {}):
                if model_config_path(model, "").is_file():
                    entry = model_defaults(model)
                    listed.add(model.rsplit("/", 1)[-1])
                    sys.stdout.write(f"{model:48} default {entry.get('GPU', '')} "
                                     f"tp={entry.get('tensor_parallelism', '')}\n")
            for folder in sorted(p.parent.name for p in MODEL_CONFIGS_DIR.glob("*/config.json")):
                if folder not in listed:
                    sys.stdout.write(f"{folder:48} (no defaults: pass --hardware and --tp)\n")
        parser.exit(0)


def _no_sim_flags(p: argparse.ArgumentParser, outputs: bool = True) -> None:
    """Stands in for ``_add_sim_flags`` on subcommands that will not parse this command line."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; given ``command`` (the subcommand about to run, "" for none), the other
    subcommands get no simulator flags: declaring them is a few ms of start-up per subcommand,
    and only the invoked subcommand parses or prints its flags."""
    from blis import __version__

    def sim_flags(name: str):
        return _add_sim_flags if command is None or command == name else _no_sim_flags

    parser = _Parser(prog="blis", description="LLM inference cluster simulator and deployment search")
    parser.add_argument("--version", action="version", version=f"blis {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="generate a workload and simulate it")
    run.add_argument("--list-models", action=_ListAction, help="list the bundled models and exit")
    run.add_argument("--list-hardware", action=_ListAction, help="list the known GPUs and exit")
    sim_flags("run")(run)
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("replay", help="simulate the requests of a TraceV2 trace")
    sim_flags("replay")(rep)
    rep.add_argument("--trace-header", required=True, help="TraceV2 header YAML")
    rep.add_argument("--trace-data", required=True, help="TraceV2 data CSV")
    rep.set_defaults(func=cmd_replay)
    try:
        from search.cli import register
    except ImportError:
        register = None
    if register is not None:
        register(sub)
    from blis.calibration.cli import register as register_calibrate
    register_calibrate(sub, sim_flags("calibrate"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The top-level parser takes no option values, so the first bare word names the subcommand.
    parser = build_parser(next((a for a in argv if not a.startswith("-")), ""))
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    try:
        return ns.func(ns)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("BLIS_DEBUG"):
            raise
        sys.stderr.write(f"error: internal: {type(exc).__name__}: {exc} (set BLIS_DEBUG=1 for a traceback)\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
