"""``blis calibrate`` and ``blis convert inference-perf`` subcommands."""

from __future__ import annotations

import sys

import yaml


def _cmd_calibrate(ns) -> int:
    from blis.calibration.fit import (calibrate, experiment_options, experiment_target, load_experiment,
                                write_coeffs)
    from blis.errors import ConfigError

    if not ns.experiment:
        raise ConfigError("experiment", "give at least one --experiment DIR")
    wl = {"measured_lengths": True, "max_stage_s": ns.max_stage_s}
    exps = [load_experiment(p) for p in ns.experiment]
    targets = [experiment_target(e, experiment_options(e, **wl)) for e in exps]
    coeffs, before, after = calibrate(targets, max_nfev=ns.max_evals,
                                      log=lambda s: print(s, file=sys.stderr))
    write_coeffs(ns.output, coeffs, {"experiments": [e.name for e in exps]})
    print(f"rms log-error (E2E mean, TTFT mean, per-token ITL per stage): "
          f"{before:.4f} -> {after:.4f}")
    print(f"wrote {ns.output}")
    return 0


def _cmd_convert(ns) -> int:
    from blis.workload.inference_perf import profile_to_spec_dict
    from blis.workload.spec import load_yaml

    spec = profile_to_spec_dict(load_yaml(ns.profile, "profile"), ns.seed)
    sys.stdout.write(yaml.safe_dump(spec, sort_keys=False))
    return 0


def register(subparsers) -> None:
    c = subparsers.add_parser("calibrate", help="fit trained-physics coefficients to measurements")
    c.add_argument("--experiment", action="append", default=[], metavar="DIR",
                   help="experiment directory (exp-config.yaml, profile.yaml, results/); repeatable")
    c.add_argument("--output", default="coefficients.yaml", help="coefficients file to write")
    c.add_argument("--max-evals", type=int, default=30, help="least-squares evaluation budget")
    c.add_argument("--max-stage-s", type=float, default=0.0,
                   help="shorten each stage to this many seconds (faster, approximate)")
    c.set_defaults(func=_cmd_calibrate)
    conv = subparsers.add_parser("convert", help="convert a workload description to a v2 spec")
    csub = conv.add_subparsers(dest="source")
    ip = csub.add_parser("inference-perf", help="inference-perf profile -> v2 WorkloadSpec")
    ip.add_argument("profile", help="inference-perf profile YAML (data:/load:)")
    ip.add_argument("--seed", type=int, default=42)
    ip.set_defaults(func=_cmd_convert)
