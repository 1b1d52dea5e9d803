"""``blis search`` and ``blis report`` subcommands.

``register(subparsers)`` is called by the main ``blis`` parser; ``main`` builds a parser with
just these two commands for ``python -m search``. Handlers return the process exit code:
0 on success, 2 on a configuration error (printed as one ``error: <field>: <message>`` line).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime
from pathlib import Path

from blis.errors import ConfigError


def _default_probe():
    """The simulator's own option validation, once the simulator package provides it."""
    try:
        from blis.config.options import build_config
    except ImportError:
        return None
    return build_config


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _cmd_search(args: argparse.Namespace) -> int:
    from search.driver import Interrupted, run_search
    from search.run_dir import default_out_dir
    from search.study_file import check_run_paths, load_study

    try:
        check_run_paths(args.out, args.storage)
        spec = load_study(args.study, probe=_default_probe())
        out = Path(args.out or default_out_dir(spec))
        started, clock = datetime.now(), time.monotonic()
        study = run_search(
            spec,
            trials=args.trials,
            workers=args.workers,
            storage=args.storage,
            out_dir=out,
            trial_timeout=args.trial_timeout,
            seed=args.seed,
            ray_address=args.ray_address,
            heartbeat=args.heartbeat,
            progress=not args.quiet,
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 128 + (e.signum if isinstance(e, Interrupted) else 2)
    from search.summary import summary_text

    print(summary_text(study, spec, out, started, time.monotonic() - clock))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from search.report import write_report
    from search.study_file import check_report_dir

    try:
        check_report_dir(args.out_dir)
        files = write_report(args.out_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in files:
        print(path)
    return 0


def register(subparsers) -> None:
    """Add the ``search`` and ``report`` subcommands to the main ``blis`` parser."""
    p = subparsers.add_parser(
        "search",
        help="multi-objective search over simulator configurations",
        description="Run or resume the Optuna study described by a study YAML file; trials run as Ray tasks.",
    )
    p.add_argument("study", help='study YAML file (see the README, "Study file reference")')
    p.add_argument("--trials", type=_positive_int, help="total finished trials wanted (default: the study's trials:, else 20)")
    p.add_argument("--workers", type=_positive_int, help="concurrent trials (default: CPU count, or the cluster's CPUs)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--storage", help="Optuna storage URL (e.g. sqlite:///study.db) or journal file path (default: OUT/study.journal)")
    p.add_argument("--heartbeat", type=_positive_float, default=10.0, metavar="S",
                   help="database storage only: seconds between trial heartbeats; a trial silent for 3 beats "
                   "(its driver was killed) is retried by another driver (default: 10)")
    p.add_argument("--out", help="output directory (default: out/<study name>)")
    p.add_argument("--trial-timeout", type=_positive_float, metavar="S", help="fail a trial running longer than S seconds")
    p.add_argument("--seed", type=int, help="sampler seed (default: the study's seed:)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)
    r = subparsers.add_parser(
        "report",
        help="(re)write the report of a search",
        description="Write pareto.csv, trials.csv, recommendations.md, summary.json and front plots into OUT_DIR.",
    )
    r.add_argument("out_dir", help="output directory of a blis search")
    r.set_defaults(func=_cmd_report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blis")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
