"""
Listwise ranking: which patients and which lists drive test NDCG?
=================================================================

A clinic reviews patients in sessions of ten and must put them in order of
urgency: whose diabetes will progress most over the next year? We build such
sessions from scikit-learn's diabetes data (442 patients, ten baseline
measurements, a disease-progression score one year later): patients are
grouped at random into sessions of ten, and the relevance of a patient is the
quartile of her progression score (0 to 3). A linear ListNet ranker
(:class:`skvif.ListwiseRankerInfluence`) is trained on 30 sessions and
evaluated by NDCG on 14 others.

In a listwise loss a patient enters the softmax normalization of her whole
list, so removing her changes every other patient's term of that list. Which
training *sessions* and which *patients* does the test performance rest on?
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes
from sklearn.metrics import ndcg_score
from sklearn.preprocessing import StandardScaler

from skvif.ranking import ListwiseRankerInfluence
from skvif.plotting import plot_estimated_vs_exact, plot_influence_index, plot_top_influence

diabetes = load_diabetes(as_frame=True, scaled=False)
rng = np.random.default_rng(0)
rows = np.sort(rng.permutation(len(diabetes.target))[:440])
session = pd.Series(rng.permutation(440) // 10, index=rows)  # 44 sessions of 10
X = diabetes.data.loc[rows]
grade = pd.qcut(diabetes.target, 4, labels=False).loc[rows]

train = (session < 30).to_numpy()
scaler = StandardScaler().fit(X[train])
Z = pd.DataFrame(scaler.transform(X), index=X.index.rename("patient"), columns=X.columns)
X_train, y_train, q_train = Z[train], grade[train].to_numpy(), session[train].to_numpy()
X_test, y_test, q_test = Z[~train], grade[~train].to_numpy(), session[~train].to_numpy()

ranker = ListwiseRankerInfluence(loss="listnet", alpha=1.0).fit(X_train, y_train, q_train)
print(f"test NDCG: {ranker.score(X_test, y_test, q_test):.4f}")
pd.Series(ranker.coef_, index=X.columns, name="coef").round(3)

# %%
# Which training sessions drive the test loss?
# --------------------------------------------
# ``target="loss"`` gives the change of each test session's ListNet loss
# (columns) when a training unit is removed (rows); ``unit="query"`` removes
# a whole training session. Summing over test sessions gives the change of
# the total test loss. Exact refits without each of the 30 sessions are
# cheap here, so we check all of them.
by_session = ranker.influence_(X_test, y_test, q_test, target="loss", unit="query",
                               as_frame=True)
by_session.index.name = "training session"
exact_session = ranker.influence_(X_test, y_test, q_test, target="loss", unit="query",
                                  method="loo").sum(axis=1)

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
plot_top_influence(by_session.sum(axis=1).rename("test loss"), k=10, ax=ax0)
ax0.set_title("Training sessions: change of the total test loss")
plot_estimated_vs_exact(by_session.sum(axis=1), exact_session, label="vif", ax=ax1)
ax1.set_title("Estimated vs refit, 30 sessions")
fig.tight_layout()

# %%
# From the loss to NDCG
# ---------------------
# NDCG is a step function of the scores, so it has no useful gradient. But
# ``target="predict"`` estimates how every test score moves when a session is
# removed, and NDCG can be recomputed from the moved scores: an estimate of
# the test NDCG without each session. We compare with the NDCG of refits.
test_sessions = np.unique(q_test)


def mean_ndcg(scores):
    return np.mean([ndcg_score([y_test[q_test == q]], [scores[q_test == q]])
                    for q in test_sessions])


scores = ranker.predict(X_test)
base = mean_ndcg(scores)
score_change = ranker.influence_(X_test, target="predict", unit="query")  # (30, 140)
estimated_ndcg = np.array([mean_ndcg(scores + d) - base for d in score_change])
exact_ndcg = np.array([
    mean_ndcg(ListwiseRankerInfluence(loss="listnet", alpha=1.0)
              .fit(X_train[q_train != q], y_train[q_train != q], q_train[q_train != q])
              .predict(X_test)) - base
    for q in ranker.queries_
])
fig, ax = plt.subplots(figsize=(5.5, 5))
plot_estimated_vs_exact({"vif through the scores": estimated_ndcg}, exact_ndcg, ax=ax)
ax.set_xlabel("exact change of test NDCG (refit)")
ax.set_ylabel("estimated change of test NDCG")
ax.set_title("Test NDCG without each training session")
fig.tight_layout()
pd.DataFrame({"estimated": estimated_ndcg, "refit": exact_ndcg},
             index=pd.Index(ranker.queries_, name="session removed")
             ).sort_values("refit").head(5).round(4)

# %%
# No single session moves the test NDCG of 0.936 by more than about 0.006:
# the ranker is robust to any one of its training sessions. The estimates
# through the scores track the refits; where they miss, two test patients
# with nearly equal scores swap places in one estimate and not in the refit
# (NDCG jumps at every swap, the scores themselves move smoothly).

# %%
# Which patients?
# ---------------
# ``unit="item"`` removes one patient from her session's list (the softmaxes
# renormalize over the nine left). The index plot shows every training
# patient's effect on the total test loss; a few stand out.
by_patient = ranker.influence_(X_test, y_test, q_test, target="loss", unit="item",
                               as_frame=True).sum(axis=1).rename("test loss")
fig, ax = plt.subplots(figsize=(10, 3.8))
plot_influence_index(by_patient, annotate=4, ax=ax)
ax.set_title("Change of the total test loss when one training patient is removed")
fig.tight_layout()

# %%
# Who are the influential patients? Compare the 20 whose removal would lower
# the test loss most ("harmful"), the 20 whose removal would raise it most
# ("helpful") and the other 260: their share of grade 3 (the fastest
# progressors) and their mean score rank within their own session (1 = put
# first by the ranker).
train_scores = pd.Series(ranker.predict(X_train), index=X_train.index)
rank_in_session = train_scores.groupby(q_train).rank(ascending=False)
order = by_patient.rank()
side = np.where(order <= 20, "harmful", np.where(order > len(order) - 20, "helpful", "other"))
pd.DataFrame({
    "grade 3": y_train == 3, "rank in session": rank_in_session, "side": side,
}).groupby("side").mean().round(2)

# %%
# Both tails are dominated by grade-3 patients (about two thirds, against one
# in five among the others), whom the ranker puts near the top of their
# sessions (mean rank about 3, against about 6). That is the listwise loss at work: ListNet's
# target distribution ``softmax(y)`` puts most of a session's mass on its
# fastest progressors, so the loss is mostly about putting them first, and
# whether one of them helps or hurts depends on whether her measurements look
# like those of the fast progressors in the test sessions. Influence is not
# a verdict on a patient, but it says which ones the ranker's behaviour on
# new sessions rests on. The estimates agree with refits:
exact_patient = ranker.influence_(X_test, y_test, q_test, target="loss", unit="item",
                                  method="loo").sum(axis=1)
fig, ax = plt.subplots(figsize=(5.5, 5))
plot_estimated_vs_exact({"vif": by_patient}, exact_patient, ax=ax)
ax.set_title("300 patients: estimated vs refit")
fig.tight_layout()
