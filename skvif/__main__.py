"""Command line: ``python -m skvif cox`` audits a Cox model for influential rows."""

import argparse
import sys
import warnings

import numpy as np
import pandas as pd


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (no usage block on stderr)."""

    def error(self, message):
        self.exit(2, f"skvif: error: {message} (see {self.prog} --help)\n")


def _one_line(message):
    return " ".join(str(message).split())


def _load(args):
    if args.data is None:
        from lifelines.datasets import load_rossi

        return load_rossi(), "week", "arrest", "Rossi recidivism data (lifelines)"
    if args.duration is None or args.event is None:
        raise ValueError("--data needs --duration COL and --event COL.")
    try:
        frame = pd.read_csv(args.data)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {args.data}: {exc}") from None
    if len(frame) == 0:
        raise ValueError(f"{args.data} has no data rows.")
    missing = [c for c in (args.duration, args.event) if c not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {', '.join(missing)} not in {args.data}; "
                         f"columns are: {', '.join(map(str, frame.columns))}.")
    return frame, args.duration, args.event, args.data


def _design_columns(frame, args, duration, event):
    """Check the optional role columns; return them and the covariate frame."""
    roles = {"--strata": args.strata, "--entry": args.entry, "--id": args.id,
             "--weights": args.weights}
    used = [c for c in roles.values() if c is not None]
    missing = [c for c in used if c not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {', '.join(missing)} not in the data; "
                         f"columns are: {', '.join(map(str, frame.columns))}.")
    reserved = [duration, event] + used
    if len(set(reserved)) != len(reserved):
        raise ValueError("the duration, event, --strata, --entry, --id and --weights "
                         "columns must all be different.")
    for flag, col in (("duration", duration), ("event", event), ("--entry", roles["--entry"]),
                      ("--weights", roles["--weights"])):
        if col is not None and not (pd.api.types.is_numeric_dtype(frame[col])
                                    or pd.api.types.is_bool_dtype(frame[col])):
            raise ValueError(f"the {flag} column {col!r} must be numeric.")
    if frame[reserved].isna().any().any():
        raise ValueError("the data contain missing values; drop or impute them first.")
    if not frame[event].isin([0, 1]).all():
        raise ValueError(f"the event column {event!r} must be 0/1 (1 = event, 0 = censored).")
    return frame.drop(columns=reserved)


def cox(args, out=None):
    """Fit, print the coefficients and the most influential rows (or subjects)."""
    out = sys.stdout if out is None else out  # looked up at call time (redirections)
    from .survival import CoxPHInfluence

    frame, duration, event, source = _load(args)
    if args.top < 0:
        raise ValueError("--top must be >= 0.")
    if not (np.isfinite(args.alpha) and args.alpha >= 0):
        raise ValueError(f"--alpha must be a finite number >= 0, got {args.alpha}.")
    X = _design_columns(frame, args, duration, event)
    non_numeric = [str(c) for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    if non_numeric:
        raise ValueError(f"non-numeric covariate column(s): {', '.join(non_numeric)}; "
                         "encode them as numbers first.")
    if X.shape[1] == 0:
        raise ValueError("no covariate columns besides the duration and event columns.")
    if X.isna().any().any():
        raise ValueError("the data contain missing values; drop or impute them first.")
    if not np.all(np.isfinite(X.to_numpy(dtype=float))):
        raise ValueError("the covariates contain infinite values.")
    column = (lambda name: None if name is None else frame[name])
    model = CoxPHInfluence(ties=args.ties, alpha=args.alpha).fit(X, frame[[duration, event]], column(args.weights),
                                 strata=column(args.strata), entry=column(args.entry))
    if model._collinear:  # the fit checked the design (rows of positive weight, strata)
        raise ValueError(f"covariate column(s) {', '.join(model._collinear)} are collinear "
                         "or constant (within strata), so their coefficients are not "
                         "identifiable; drop one of them or set a ridge penalty "
                         "--alpha > 0.")
    groups = column(args.id)
    # with --id a unit is a subject (all its rows), and the standard errors are
    # R's robust ones clustered by subject (coxph(..., cluster(id)))
    refine = args.top if args.refine is None else args.refine
    if refine < 0:
        raise ValueError("--refine must be >= 0.")
    # the units with the largest estimated change are refitted exactly
    influence, exact = model.influence_(as_frame=True, groups=groups, refine=refine,
                                        return_exact=True)
    summary = model.summary(robust=groups is not None, groups=groups)

    # rank units by a Cook's-distance-like size: the change in the coefficients
    # measured in their own standard errors, root mean square over coefficients;
    # the exactly refitted units first, so that the printed rows are refits
    se = summary["se(coef)"].to_numpy()
    size = np.sqrt(np.mean((influence.to_numpy() / se) ** 2, axis=1))
    top = np.lexsort((-size, ~exact.to_numpy()))[:args.top]
    method = np.where(exact.to_numpy(), "refit", "vif")
    unit = "rows" if groups is None else f"subjects ({args.id})"

    with pd.option_context("display.width", 200, "display.max_columns", 50):
        design = "".join(f", {label} {name}" for label, name in
                         (("strata", args.strata), ("entry", args.entry),
                          ("weights", args.weights), ("id", args.id)) if name)
        print(f"Cox model on {source}: {len(frame)} rows, {int(frame[event].sum())} events, "
              f"{model.n_iter_} Newton iterations{design}", file=out)
        title = ("Coefficients (robust standard errors clustered by "
                 f"{args.id}):" if groups is not None else "Coefficients:")
        print(f"\n{title}", file=out)
        print(summary.round(4).to_string(), file=out)
        if len(top):
            n_exact = int(exact.iloc[top].sum())
            print(f"\nThe {len(top)} most influential {unit} (influence = change of each "
                  "coefficient if removed; size = RMS of those changes in "
                  f"standard errors; method: 'refit' = exact refit without the unit "
                  f"({n_exact} shown), 'vif' = the VIF estimate):", file=out)
            changes = influence.iloc[top].add_prefix("Δ ")
            if groups is None:
                rows = frame.iloc[top].copy()
                rows.insert(0, "size", size[top])
                rows.insert(1, "method", method[top])
                table = pd.concat([rows, changes], axis=1)
            else:
                table = changes.copy()
                table.insert(0, "size", size[top])
                table.insert(1, "method", method[top])
                table.index.name = args.id
            print(table.round(4).to_string(), file=out)
    if args.robustness is not None:
        report = model.robustness_(args.robustness, alpha_level=args.alpha_level,
                                   groups=groups)
        print(f"\nRobustness of {args.robustness} (coef {report.estimate:.4g}, se "
              f"{report.se:.4g}; Wald test at alpha = {args.alpha_level:g}, model-based "
              "standard errors recomputed at each refit):", file=out)
        for answer in report:
            print(f"  {answer.describe()}", file=out)
    if args.out:
        influence.assign(size=size, method=method).to_csv(args.out,
                                                          index_label=args.id or "row")
        print(f"\nWrote the influence of all {len(influence)} {unit} to {args.out}", file=out)


def main(argv=None):
    parser = _Parser(prog="python -m skvif",
                     description="Influence diagnostics without refitting.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cox", help="audit a Cox proportional hazards model")
    p.add_argument("--data", help="CSV file (default: the Rossi data shipped with lifelines)")
    p.add_argument("--duration", help="name of the duration column")
    p.add_argument("--event", help="name of the event column (1 = event, 0 = censored)")
    p.add_argument("--top", type=int, default=10, help="how many rows to show (default 10)")
    p.add_argument("--out", help="write every row's influence to this CSV file")
    p.add_argument("--strata", metavar="COL",
                   help="stratum column: a baseline hazard per stratum (R strata())")
    p.add_argument("--entry", metavar="COL",
                   help="delayed-entry (start) time column: at risk on (entry, duration]")
    p.add_argument("--id", metavar="COL",
                   help="subject / cluster id column: influence per subject and robust "
                        "standard errors clustered by it (R cluster())")
    p.add_argument("--weights", metavar="COL", help="case weight column (R weights=)")
    p.add_argument("--ties", choices=["efron", "breslow"], default="efron",
                   help="handling of tied event times (default efron, as R and lifelines)")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="ridge penalty alpha/2 ||beta||^2 on the coefficients (default 0)")
    p.add_argument("--refine", type=int, default=None, metavar="K",
                   help="refit exactly the K units with the largest estimated change "
                        "(default: --top, so the printed rows are exact refits)")
    p.add_argument("--robustness", metavar="COL",
                   help="smallest set of units whose removal changes the sign or the "
                        "significance of coefficient COL (confirmed by refit)")
    p.add_argument("--alpha-level", type=float, default=0.05,
                   help="significance level for --robustness (default 0.05)")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cox(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"skvif: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, but say what it was
        print(f"skvif: error: unexpected {type(exc).__name__}: {_one_line(exc)}",
              file=sys.stderr)
        return 1
    # the run succeeded: report what the fit warned about (e.g. monotone
    # likelihood), one line each
    for message in dict.fromkeys(_one_line(w.message) for w in caught):
        print(f"skvif: warning: {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
