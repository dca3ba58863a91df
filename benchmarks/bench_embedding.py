"""Benchmark: node-embedding influence against exact refits, and at scale.

``accuracy`` (default): Zachary's karate club and the Florentine families
graph (networkx), documented defaults, 20 random node pairs: the time of
all-nodes and all-edges influence by ``vif``, ``if`` and ``newton`` next to the
time of all warm-started exact refits (``method="loo"``), and the Pearson
correlation, slope (estimate on refit, least squares) and largest error
(relative to the largest refit change) of each estimate against the refits
(pairs that contain a removed node excluded).

``scale``: Les Miserables (77 nodes) and stochastic block models of 200, 1,000
and 5,000 nodes (blocks of about 200 nodes, expected 8 neighbours inside the
block and 2 outside, fixed seed), each in its own subprocess: fit time,
all-edges and all-nodes ``vif`` on 10 random pairs, peak memory (the
subprocess' ``ru_maxrss``), and, up to ``--refit-max`` nodes, agreement of
``vif`` and ``newton`` with exact warm-started refits on 20 sampled edges and
20 sampled nodes.

Run: ``python benchmarks/bench_embedding.py [accuracy|scale] [--pairs N] [--seed S]``;
one BLAS thread is the fair setting (``OMP_NUM_THREADS=1``).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import networkx as nx
import numpy as np

import skvif
from skvif.embedding import NodeEmbeddingInfluence

# the agreement metrics of the test suite (Pearson, slope, max error), one copy
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from _accuracy import agreement as _agreement  # noqa: E402

GRAPHS = {"karate": nx.karate_club_graph, "florentine": nx.florentine_families_graph}
METHODS = ("vif", "if", "newton")
SCALE_GRAPHS = ("les_miserables", "sbm200", "sbm1000", "sbm5000")


def sbm_graph(n_nodes, seed=0):
    """Stochastic block model: blocks of about 200 nodes, 8 + 2 expected neighbours."""
    k = max(4, n_nodes // 200)
    sizes = [n_nodes // k] * k
    sizes[-1] += n_nodes - sum(sizes)
    size = n_nodes // k
    P = np.full((k, k), 2.0 / (n_nodes - size))
    np.fill_diagonal(P, 8.0 / size)
    return nx.stochastic_block_model(sizes, P.tolist(), seed=seed, sparse=True)


def scale_graph(name):
    if name == "les_miserables":
        return nx.les_miserables_graph()
    return sbm_graph(int(name[3:]))


def random_pairs(nodes, n_pairs, seed):
    rng = np.random.RandomState(seed)
    return [tuple(nodes[i] for i in rng.choice(len(nodes), 2, replace=False))
            for _ in range(n_pairs)]


def agreement(estimate, exact):
    """Pearson r, slope of estimate on refit, max error / max refit change (finite entries)."""
    keep = np.isfinite(estimate) & np.isfinite(exact)
    got = _agreement(estimate[keep], exact[keep])
    return got["r"], got["slope"], got["max_error"]


def timed(func):
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def cpu_timed(func):
    """Result, wall seconds and CPU seconds (this process, all threads)."""
    start = time.process_time()
    result, wall = timed(func)
    return result, wall, time.process_time() - start


def accuracy(args):
    print(f"{'graph':<11}{'unit':<6}{'method':<8}{'seconds':>9}{'refits/this':>13}"
          f"{'pearson':>9}{'slope':>8}{'max err':>9}")
    for name, make_graph in GRAPHS.items():
        G = make_graph()
        model, fit_time = timed(lambda: NodeEmbeddingInfluence(random_state=0).fit(G))
        print(f"{name}: {G.number_of_nodes()} nodes, {G.number_of_edges()} edges, "
              f"fit {fit_time:.2f} s ({model.n_iter_} iterations)")
        pairs = random_pairs(model.nodes_, args.pairs, args.seed)
        for unit in ("edge", "node"):
            exact, loo_time = timed(lambda: model.influence_(pairs, unit=unit, method="loo"))
            print(f"{name:<11}{unit:<6}{'loo':<8}{loo_time:9.2f}{1:13.1f}")
            for method in METHODS:
                estimate, seconds = timed(
                    lambda: model.influence_(pairs, unit=unit, method=method,
                                             line_search=method == "newton"))
                r, slope, err = agreement(estimate, exact)
                print(f"{name:<11}{unit:<6}{method:<8}{seconds:9.2f}"
                      f"{loo_time / seconds:13.1f}{r:9.3f}{slope:8.3f}{err:9.3f}")


def scale_one(name, args):
    """One graph, in its own process: a JSON line of times, memory and agreement."""
    G = scale_graph(name)
    row = {"graph": name, "nodes": G.number_of_nodes(), "edges": G.number_of_edges()}
    model, row["fit_s"], row["fit_cpu"] = cpu_timed(
        lambda: NodeEmbeddingInfluence(random_state=0).fit(G))
    row["fit_iter"] = model.n_iter_
    pairs = random_pairs(model.nodes_, args.pairs, args.seed)
    for unit in ("edge", "node"):
        _, row[f"vif_{unit}s_s"], row[f"vif_{unit}s_cpu"] = cpu_timed(
            lambda: model.influence_(pairs, unit=unit))
    row["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if row["nodes"] <= args.refit_max:
        rng = np.random.RandomState(args.seed)
        for unit, labels in (("edge", model.edges_), ("node", model.nodes_)):
            units = [labels[k] for k in rng.choice(len(labels), args.sample, replace=False)]
            exact, row[f"loo_{unit}_s"] = timed(
                lambda: model.influence_(pairs, unit=unit, method="loo", units=units))
            for method in ("vif", "newton"):
                estimate, seconds = timed(
                    lambda: model.influence_(pairs, unit=unit, method=method, units=units,
                                             line_search=method == "newton"))
                row[f"{method}_{unit}_sample_s"] = seconds
                row[f"{method}_{unit}"] = agreement(estimate, exact)
        row["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(row), flush=True)


def scale(args):
    print("wall seconds (CPU seconds); the edges run includes the pair solves, which the "
          "nodes run reuses")
    print(f"{'graph':<16}{'nodes':>6}{'edges':>7}{'fit':>15}{'vif edges':>15}"
          f"{'vif nodes':>15}{'total':>15}{'peak MiB':>9}")
    rows = []
    for name in args.graphs:
        command = [sys.executable, __file__, "scale-one", name, "--pairs", str(args.pairs),
                   "--seed", str(args.seed), "--sample", str(args.sample),
                   "--refit-max", str(args.refit_max)]
        # the subprocess imports the same skvif as this one
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(skvif.__file__)), os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run(command, capture_output=True, text=True, check=True,
                             env=env).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        wall = [row["fit_s"], row["vif_edges_s"], row["vif_nodes_s"]]
        cpu = [row["fit_cpu"], row["vif_edges_cpu"], row["vif_nodes_cpu"]]
        cells = "".join(f"{w:8.1f} ({c:4.0f})" for w, c in zip(wall + [sum(wall)],
                                                                 cpu + [sum(cpu)]))
        print(f"{name:<16}{row['nodes']:>6}{row['edges']:>7}{cells}{row['rss_mib']:9.0f}",
              flush=True)
    print(f"\nagreement with exact refits ({args.sample} sampled units, {args.pairs} pairs): "
          "pearson / slope (estimate on refit) / max err (relative to max refit change)")
    for row in rows:
        for unit in ("edge", "node"):
            if f"vif_{unit}" not in row:
                continue
            cells = "  ".join(f"{m} {row[f'{m}_{unit}'][0]:.3f}/{row[f'{m}_{unit}'][1]:.3f}/"
                              f"{row[f'{m}_{unit}'][2]:.3f} ({row[f'{m}_{unit}_sample_s']:.1f} s)"
                              for m in ("vif", "newton"))
            print(f"{row['graph']:<16}{unit:<6}loo {row[f'loo_{unit}_s']:.1f} s  {cells}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="accuracy",
                        choices=["accuracy", "scale", "scale-one"])
    parser.add_argument("graphs", nargs="*", default=list(SCALE_GRAPHS))
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--refit-max", type=int, default=1000)
    args = parser.parse_args()
    if args.pairs is None:
        args.pairs = 20 if args.mode == "accuracy" else 10
    if args.mode == "accuracy":
        accuracy(args)
    elif args.mode == "scale":
        scale(args)
    else:
        scale_one(args.graphs[0], args)


if __name__ == "__main__":
    main()
