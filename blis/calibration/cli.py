"""``blis calibrate`` and ``blis convert inference-perf`` subcommands."""

from __future__ import annotations

import sys


def _start_coeffs(opts: dict) -> dict:
    """Where the fit starts: the coefficients the options name, else the defaults."""
    from blis.calibration.fit import default_coeffs
    from blis.config.options import build_config
    from blis.errors import ConfigError

    if opts.get("latency_model", "trained-physics") != "trained-physics":
        raise ConfigError("latency-model", "calibrate fits trained-physics coefficients only")
    start = default_coeffs()
    if any(k in opts for k in ("alpha_coeffs", "beta_coeffs", "coefficients")):
        dep = build_config(opts, replay=True).deployment
        if dep.alpha_coeffs is not None:
            start["alpha"] = list(dep.alpha_coeffs)
        if dep.beta_coeffs is not None:
            if len(dep.beta_coeffs) != 11:  # shorter vectors switch basis functions off
                raise ConfigError("beta-coeffs", f"calibration starts from 11 beta "
                                                 f"coefficients, got {len(dep.beta_coeffs)}")
            start["beta"] = list(dep.beta_coeffs)
    return start


def _cmd_calibrate(ns) -> int:
    from blis.calibration.fit import calibrate, experiment_options, experiment_target, load_experiment, trace_target
    from blis.config.options import OPTIONS
    from blis.errors import ConfigError
    from blis.latency.coefficients import write_coeffs

    opts = {k: v for k, v in vars(ns).items() if k in OPTIONS}
    trace = ns.trace_header or ns.trace_data
    if trace and ns.experiment:
        raise ConfigError("experiment", "give either --experiment DIRs or a trace, not both")
    if trace:
        if not (ns.trace_header and ns.trace_data):
            missing = "trace-data" if ns.trace_header else "trace-header"
            raise ConfigError(missing, "is required with --" + ("trace-header" if ns.trace_header
                                                                 else "trace-data"))
        start = _start_coeffs(opts)
        targets = [trace_target(ns.trace_header, ns.trace_data, opts, ns.windows)]
        meta = {"trace": ns.trace_data}
        what = f"{ns.windows} arrival windows"
    elif ns.experiment:
        if opts:
            first = next(iter(opts))
            raise ConfigError(first.replace("_", "-"), "applies to trace calibration only; an "
                              "experiment's settings come from its exp-config.yaml")
        start = None
        wl = {"measured_lengths": True, "max_stage_s": ns.max_stage_s}
        exps = [load_experiment(p) for p in ns.experiment]
        targets = [experiment_target(e, experiment_options(e, **wl)) for e in exps]
        meta = {"experiments": [e.name for e in exps]}
        what = "stages"
    else:
        raise ConfigError("experiment", "give at least one --experiment DIR, or "
                                        "--trace-header and --trace-data")
    fit = calibrate(targets, base=start, max_nfev=ns.max_evals,
                    log=lambda s: print(s, file=sys.stderr))
    write_coeffs(ns.output, fit.coeffs, meta)
    print(f"median absolute error over {what} (before -> after):")
    for m in fit.err_before:
        print(f"  {m:10} {fit.err_before[m]:7.1f} % -> {fit.err_after[m]:.1f} %")
    print(f"rms log-error {fit.rms_before:.4f} -> {fit.rms_after:.4f}")
    print(f"wrote {ns.output}")
    return 0


def _cmd_convert(ns) -> int:
    import yaml

    from blis.workload.inference_perf import profile_to_spec_dict
    from blis.workload.spec import load_yaml

    spec = profile_to_spec_dict(load_yaml(ns.profile, "profile"), ns.seed)
    sys.stdout.write(yaml.safe_dump(spec, sort_keys=False))
    return 0


def register(subparsers, add_sim_flags) -> None:
    """Add ``calibrate`` and ``convert``; ``add_sim_flags`` is the CLI's own simulator-flag adder."""
    c = subparsers.add_parser(
        "calibrate", help="fit trained-physics coefficients to measurements",
        description="Fit trained-physics coefficients to per-stage measurements (--experiment) "
                    "or to a per-request TraceV2 trace (--trace-header/--trace-data, replayed "
                    "with the simulator in the loop; simulator flags apply to trace mode, "
                    "the trace header's server block fills model, TP, max-num-seqs, block size).")
    c.add_argument("--experiment", action="append", default=[], metavar="DIR",
                   help="experiment directory (exp-config.yaml, profile.yaml, results/); repeatable")
    c.add_argument("--trace-header", default="", help="TraceV2 header YAML (trace mode)")
    c.add_argument("--trace-data", default="", help="TraceV2 data CSV (trace mode)")
    c.add_argument("--windows", type=int, default=10,
                   help="trace mode: equal-count arrival windows whose means are fitted")
    c.add_argument("--output", default="coefficients.yaml", help="coefficients file to write")
    c.add_argument("--max-evals", type=int, default=30, help="least-squares evaluation budget")
    c.add_argument("--max-stage-s", type=float, default=0.0,
                   help="shorten each stage to this many seconds (faster, approximate)")
    add_sim_flags(c, outputs=False)
    c.set_defaults(func=_cmd_calibrate)
    conv = subparsers.add_parser("convert", help="convert a workload description to a v2 spec")
    csub = conv.add_subparsers(dest="source")
    ip = csub.add_parser("inference-perf", help="inference-perf profile -> v2 WorkloadSpec")
    ip.add_argument("profile", help="inference-perf profile YAML (data:/load:)")
    ip.add_argument("--seed", type=int, default=42)
    ip.set_defaults(func=_cmd_convert)
