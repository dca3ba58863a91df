"""Benchmark: node-embedding influence against the estimator's exact refits.

For Zachary's karate club and the Florentine families graph (networkx), at the
documented defaults, 20 random node pairs: the time of all-nodes and all-edges
influence by ``vif``, ``if`` and ``newton`` next to the time of all warm-started
exact refits (``method="loo"``), and the Pearson correlation of each estimate
with the refits (pairs that contain a removed node excluded).

Run: ``python benchmarks/bench_embedding.py [--pairs 20] [--seed 0]``.
"""

import argparse
import time

import networkx as nx
import numpy as np

from skvif.embedding import NodeEmbeddingInfluence

GRAPHS = {"karate": nx.karate_club_graph, "florentine": nx.florentine_families_graph}
METHODS = ("vif", "if", "newton")


def random_pairs(nodes, n_pairs, seed):
    rng = np.random.RandomState(seed)
    return [tuple(nodes[i] for i in rng.choice(len(nodes), 2, replace=False))
            for _ in range(n_pairs)]


def pearson(estimate, exact):
    keep = np.isfinite(estimate) & np.isfinite(exact)
    return np.corrcoef(estimate[keep], exact[keep])[0, 1]


def timed(func):
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"{'graph':<11}{'unit':<6}{'method':<8}{'seconds':>9}{'refits/this':>13}"
          f"{'pearson':>9}")
    for name, make_graph in GRAPHS.items():
        G = make_graph()
        model, fit_time = timed(lambda: NodeEmbeddingInfluence(random_state=0).fit(G))
        print(f"{name}: {G.number_of_nodes()} nodes, {G.number_of_edges()} edges, "
              f"fit {fit_time:.2f} s ({model.n_iter_} iterations)")
        pairs = random_pairs(model.nodes_, args.pairs, args.seed)
        for unit in ("edge", "node"):
            exact, loo_time = timed(lambda: model.influence_(pairs, unit=unit, method="loo"))
            print(f"{name:<11}{unit:<6}{'loo':<8}{loo_time:9.2f}{1:13.1f}{1:9.3f}")
            for method in METHODS:
                estimate, seconds = timed(
                    lambda: model.influence_(pairs, unit=unit, method=method))
                print(f"{name:<11}{unit:<6}{method:<8}{seconds:9.2f}"
                      f"{loo_time / seconds:13.1f}{pearson(estimate, exact):9.3f}")


if __name__ == "__main__":
    main()
