"""Command line: ``python -m skvif cox`` audits a Cox model for influential rows."""

import argparse
import os
import sys
import warnings

import numpy as np
import pandas as pd

METHOD_TEXT = {
    "vif": "VIF: full-data Hessian, exact leave-one-out gradient change",
    "if": "infinitesimal influence, R's -dfbeta",
    "newton": "one Newton step on the data without the unit",
    "loo": "exact refits",
}
OUT_CHUNK_ROWS = 50_000  # rows of --out written at a time


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (no usage block on stderr)."""

    def error(self, message):
        self.exit(2, f"skvif: error: {message} (see {self.prog} --help)\n")


def _one_line(message):
    return " ".join(str(message).split())


def _say(args, message):
    """Progress of the stages (with --verbose), on stderr."""
    if args.verbose:
        print(f"skvif: {message}", file=sys.stderr, flush=True)


def _check_writable(path, flag):
    """Fail before any computation when ``path`` cannot be written."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"cannot write {flag} {path}: it is a directory.")
    if not os.path.isdir(folder):
        raise ValueError(f"cannot write {flag} {path}: non-existent directory {folder}.")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {flag} {path}: directory {folder} is not writable.")


def _names(text):
    return [] if text is None else [c.strip() for c in text.split(",") if c.strip()]


def _load(args):
    if args.data is None:
        from lifelines.datasets import load_rossi

        return load_rossi(), "week", "arrest", "Rossi recidivism data (lifelines)"
    has_surv = args.formula is not None and "~" in args.formula
    if not has_surv and (args.duration is None or args.event is None):
        raise ValueError("--data needs --duration COL and --event COL (or --formula "
                         "'Surv(time, event) ~ ...').")
    try:
        frame = pd.read_csv(args.data)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {args.data}: {exc}") from None
    if len(frame) == 0:
        raise ValueError(f"{args.data} has no data rows.")
    missing = [c for c in (args.duration, args.event) if c is not None
               and c not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {', '.join(missing)} not in {args.data}; "
                         f"columns are: {', '.join(map(str, frame.columns))}.")
    return frame, args.duration, args.event, args.data


def _check_roles(frame, args, duration, event):
    """Check the role columns; return the names of all of them."""
    roles = {"--strata": args.strata, "--entry": args.entry, "--id": args.id,
             "--weights": args.weights, "--label": args.label}
    used = [c for c in roles.values() if c is not None]
    missing = [c for c in used if c not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {', '.join(missing)} not in the data; "
                         f"columns are: {', '.join(map(str, frame.columns))}.")
    reserved = [c for c in (duration, event) if c is not None] + used
    if len(set(reserved)) != len(reserved):
        raise ValueError("the duration, event, --strata, --entry, --id, --weights and --label "
                         "columns must all be different.")
    for flag, col in (("duration", duration), ("event", event), ("--entry", args.entry),
                      ("--weights", args.weights)):
        if col is not None and not (pd.api.types.is_numeric_dtype(frame[col])
                                    or pd.api.types.is_bool_dtype(frame[col])):
            raise ValueError(f"the {flag} column {col!r} must be numeric.")
    if event is not None and not frame[event].dropna().isin([0, 1]).all():
        raise ValueError(f"the event column {event!r} must be 0/1 (1 = event, 0 = censored).")
    return reserved


def _formula(frame, args, duration, event, reserved):
    """The model formula: --formula, else --covariates or every other column but --drop."""
    from .survival._formula import quote_name

    strata = f" + strata({quote_name(args.strata)})" if args.strata else ""
    if args.formula is not None:
        if args.covariates or args.drop:
            raise ValueError("--formula already chooses the covariates: do not combine it "
                             "with --covariates or --drop.")
        if "~" in args.formula:
            if args.entry:
                raise ValueError("with --entry, write the formula's left-hand side as "
                                 "Surv(start, stop, event) or give only its right-hand side.")
            return args.formula + strata
        rhs = args.formula
    else:
        chosen, dropped = _names(args.covariates), _names(args.drop)
        absent = [c for c in chosen + dropped if c not in frame.columns]
        if absent:
            raise ValueError(f"column(s) {', '.join(absent)} not in the data; columns are: "
                             f"{', '.join(map(str, frame.columns))}.")
        if chosen and dropped:
            raise ValueError("give --covariates or --drop, not both.")
        covariates = chosen or [c for c in frame.columns if c not in reserved + dropped]
        if not covariates:
            raise ValueError("no covariate columns besides the duration and event columns.")
        rhs = " + ".join(quote_name(c) for c in covariates)
    entry = f"{quote_name(args.entry)}, " if args.entry else ""
    return f"Surv({entry}{quote_name(duration)}, {quote_name(event)}) ~ {rhs}{strata}"


def _unit_labels(design, args):
    """Row labels: the --label column, else the CSV row number (0-based)."""
    if args.label is None:
        return design["X"].index
    labels = pd.Index(design["data"][args.label], name=args.label)
    if labels.has_duplicates:
        raise ValueError(f"the --label column {args.label!r} has repeated values; use --id "
                         "for several rows per subject.")
    return labels


def _write_out(table, path, index_label, args):
    """``table`` to CSV in chunks of rows (streamed), with a progress bar."""
    from ._progress import progress_bar

    with open(path, "w", newline="") as handle, \
            progress_bar(len(table), "writing --out", 1 if args.verbose else None) as bar:
        for start in range(0, len(table), OUT_CHUNK_ROWS):
            chunk = table.iloc[start:start + OUT_CHUNK_ROWS]
            chunk.to_csv(handle, header=start == 0, index_label=index_label)
            bar.update(len(chunk))


def _plot(influence, size, path, top, what):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting import plot_influence_index, plot_top_influence

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_influence_index(size.rename("size"), annotate=3, ax=left)
    left.set_title("size of each unit's influence (RMS of dfbetas)")
    plot_top_influence(influence, k=max(1, min(top, len(influence))), ax=right)
    right.set_title(f"most influential units: {what}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cox(args, out=None):
    """Fit, print the coefficients and the most influential rows (or subjects)."""
    out = sys.stdout if out is None else out  # looked up at call time (redirections)
    from .survival import CoxPHInfluence
    from .survival._attributes import summary_header
    from .survival._formula import design_from_formula

    _check_writable(args.out, "--out")
    _check_writable(args.plot, "--plot")
    frame, duration, event, source = _load(args)
    if args.top < 0:
        raise ValueError("--top must be >= 0.")
    if not (np.isfinite(args.alpha) and args.alpha >= 0):
        raise ValueError(f"--alpha must be a finite number >= 0, got {args.alpha}.")
    reserved = _check_roles(frame, args, duration, event)
    formula = _formula(frame, args, duration, event, reserved)
    _say(args, f"encoding {len(frame)} rows: {formula}")
    extra = [c for c in (args.id, args.label) if c is not None]
    design = design_from_formula(formula, frame, weights=args.weights, missing=args.missing,
                                 extra_columns=extra)
    duration, event = design["duration"], design["event"]
    X = design["X"]
    if not np.all(np.isfinite(X.to_numpy(dtype=float))):
        raise ValueError("the covariates contain infinite values.")
    X.index = _unit_labels(design, args)
    _say(args, f"fitting the Cox model on {len(X)} rows and {X.shape[1]} covariates")
    model = CoxPHInfluence(ties=args.ties, alpha=args.alpha).fit(
        X, design["y"].set_axis(X.index), None if design["weights"] is None
        else design["weights"].to_numpy(), strata=design["strata"], entry=design["entry"])
    model.dropped_rows_ = design["dropped"]
    if model._collinear:  # the fit checked the design (rows of positive weight, strata)
        raise ValueError(f"covariate column(s) {', '.join(model._collinear)} are collinear "
                         "or constant (within strata), so their coefficients are not "
                         "identifiable; drop one of them or set a ridge penalty "
                         "--alpha > 0.")
    groups = None if args.id is None else design["data"][args.id].to_numpy()
    # with --id a unit is a subject (all its rows), and the standard errors are
    # R's robust ones clustered by subject (coxph(..., cluster(id)))
    refine = args.top if args.refine is None else args.refine
    if refine < 0:
        raise ValueError("--refine must be >= 0.")
    _say(args, f"influence of every {'subject' if groups is not None else 'row'} "
               f"(method {args.method}; the {refine} largest refitted exactly)")
    # the units with the largest estimated change are refitted exactly
    influence, exact = model.influence_(as_frame=True, groups=groups, method=args.method,
                                        refine=refine, return_exact=True,
                                        verbose=1 if args.verbose else None)
    summary = model.summary(robust=groups is not None, groups=groups)

    # rank units by a Cook's-distance-like size: the change in the coefficients
    # measured in their own standard errors (dfbetas), root mean square over
    # coefficients; the exactly refitted units first, so that the printed rows are refits
    se = summary["se(coef)"].to_numpy()
    dfbetas = influence / se
    size = pd.Series(np.sqrt(np.mean(dfbetas.to_numpy() ** 2, axis=1)), index=influence.index)
    shown = dfbetas if args.scale == "dfbetas" else influence
    what = ("dfbetas = change of each coefficient if removed, in its standard errors"
            if args.scale == "dfbetas" else "change of each coefficient if removed")
    top = np.lexsort((-size.to_numpy(), ~exact.to_numpy()))[:args.top]
    method = pd.Series(np.where(exact.to_numpy(), "refit", args.method), index=influence.index)
    unit = "rows" if groups is None else f"subjects ({args.id})"
    index_label = args.id or args.label or "row"

    with pd.option_context("display.width", 200, "display.max_columns", 50):
        design_text = "".join(f", {label} {name}" for label, name in
                              (("strata", args.strata), ("entry", args.entry),
                               ("weights", args.weights), ("id", args.id)) if name)
        print(f"Cox model on {source} ({args.ties} ties{design_text}): {formula}", file=out)
        for line in summary_header(model):
            print(line, file=out)
        print(f"{model.n_iter_} Newton iterations", file=out)
        levels = getattr(model, "reference_levels_", None) or design["reference_levels"]
        if levels:
            print("reference levels: " + ", ".join(f"{k} = {v}" for k, v in levels.items()),
                  file=out)
        title = ("Coefficients (robust standard errors clustered by "
                 f"{args.id}):" if groups is not None else "Coefficients:")
        print(f"\n{title}", file=out)
        print(summary.round(4).to_string(), file=out)
        if len(top):
            n_exact = int(exact.iloc[top].sum())
            print(f"\nThe {len(top)} most influential {unit}, method {args.method} "
                  f"({METHOD_TEXT[args.method]}); {what}; size = RMS of the dfbetas; "
                  f"column method: 'refit' = exact refit without the unit ({n_exact} shown), "
                  f"'{args.method}' = the estimate:", file=out)
            prefix = "dfbetas " if args.scale == "dfbetas" else "Δ "
            changes = shown.iloc[top].add_prefix(prefix)
            if groups is None:
                rows = design["data"].set_axis(X.index).iloc[top].copy()
                rows.insert(0, "size", size.iloc[top])
                rows.insert(1, "method", method.iloc[top])
                table = pd.concat([rows, changes], axis=1)
            else:
                table = changes.copy()
                table.insert(0, "size", size.iloc[top])
                table.insert(1, "method", method.iloc[top])
            table.index.name = args.id or args.label
            print(table.to_string(float_format=lambda v: f"{v:.4g}"), file=out)
    if args.robustness is not None:
        _say(args, f"robustness of {args.robustness} (exact refits)")
        report = model.robustness_(args.robustness, alpha_level=args.alpha_level,
                                   groups=groups)
        print(f"\nRobustness of {args.robustness} (coef {report.estimate:.4g}, se "
              f"{report.se:.4g}; Wald test at alpha = {args.alpha_level:g}, model-based "
              "standard errors recomputed at each refit):", file=out)
        for answer in report:
            print(f"  {answer.describe()}", file=out)
    if args.out:
        _say(args, f"writing {len(influence)} rows to {args.out}")
        _write_out(shown.assign(size=size, method=method), args.out, index_label, args)
        print(f"\nWrote the influence ({args.method}, {args.scale}) of all {len(influence)} "
              f"{unit} to {args.out}", file=out)
    if args.plot:
        _plot(shown, size, args.plot, args.top or 10, what)
        print(f"Wrote the index plot and the top {unit} to {args.plot}", file=out)


def main(argv=None):
    parser = _Parser(prog="python -m skvif",
                     description="Influence diagnostics without refitting.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cox", help="audit a Cox proportional hazards model")
    p.add_argument("--data", help="CSV file (default: the Rossi data shipped with lifelines)")
    p.add_argument("--duration", help="name of the duration column")
    p.add_argument("--event", help="name of the event column (1 = event, 0 = censored)")
    p.add_argument("--formula",
                   help="R-style model formula, e.g. 'Surv(time, cens) ~ age + tgrade' "
                        "or only its right-hand side (with --duration, --event); '.' = "
                        "every other column; string columns are factors")
    p.add_argument("--covariates", metavar="COL,COL",
                   help="comma-separated covariate columns (default: every other column)")
    p.add_argument("--drop", metavar="COL,COL",
                   help="comma-separated columns not to use as covariates")
    p.add_argument("--top", type=int, default=10, help="how many rows to show (default 10)")
    p.add_argument("--out", help="write every row's influence to this CSV file")
    p.add_argument("--plot", metavar="FILE.png",
                   help="save an index plot of every unit's influence and the top units")
    p.add_argument("--method", choices=["vif", "if", "newton", "loo"], default="vif",
                   help="influence estimate (default vif; loo refits once per unit)")
    p.add_argument("--scale", choices=["raw", "dfbetas"], default="raw",
                   help="report changes of the coefficients (raw, default) or in their "
                        "standard errors (dfbetas)")
    p.add_argument("--strata", metavar="COL",
                   help="stratum column: a baseline hazard per stratum (R strata())")
    p.add_argument("--entry", metavar="COL",
                   help="delayed-entry (start) time column: at risk on (entry, duration]")
    p.add_argument("--id", metavar="COL",
                   help="subject / cluster id column: influence per subject and robust "
                        "standard errors clustered by it (R cluster())")
    p.add_argument("--label", metavar="COL",
                   help="row label column (unique): names the rows in the output, "
                        "without clustering")
    p.add_argument("--weights", metavar="COL", help="case weight column (R weights=)")
    p.add_argument("--missing", choices=["drop", "raise"], default="drop",
                   help="rows with missing values in the columns used: drop them with a "
                        "warning (default, as R) or stop")
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
    p.add_argument("--verbose", action="store_true",
                   help="report each stage and show progress bars on stderr")
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
    # likelihood, rows dropped for missing values), one line each
    for message in dict.fromkeys(_one_line(w.message) for w in caught):
        print(f"skvif: warning: {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
