"""The reference task done as a batch job today: DuckDB recomputes the clean
events, the lagged aggregates and every example from the whole log, then
scikit-learn's SGDClassifier (log loss) is scored and trained epoch by epoch
on the ten ln(1 + a) features (progressive validation, z-scores from earlier
epochs only, as deltarec does).

Usage: python duckdb_sklearn.py EVENTS.csv [--examples-out FILE]

EVENTS.csv is a RetailRocket-format log without malformed rows (the peers
do no quarantine). Prints one JSON object: the seconds of the feature and
model phases (imports and the optional export not included), the examples,
positives, log loss and AUC. --examples-out writes the examples (epoch
order) for river_online.py and vw_online.py.
"""

import argparse
import json
import time

import duckdb
import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

FEATURES = ["u_views", "u_carts", "u_purchases", "u_items",
            "i_views", "i_carts", "i_purchases", "i_users",
            "p_views", "p_carts"]

# Reference task sections 2-5: de-duplicate, drop bot user-days (> 1000
# distinct events), count per pair, user and item per epoch, and take the
# sums over strictly earlier epochs (a window ending one row before).
SQL = """
CREATE TEMP TABLE ev AS
SELECT DISTINCT timestamp AS ts, visitorid AS u, itemid AS i,
       CASE event WHEN 'view' THEN 0 WHEN 'addtocart' THEN 1 ELSE 2 END AS k,
       timestamp // 86400000 AS e
FROM read_csv('{path}', header = true, columns = {{
    'timestamp': 'BIGINT', 'visitorid': 'UBIGINT', 'event': 'VARCHAR',
    'itemid': 'UBIGINT', 'transactionid': 'VARCHAR'}})
WHERE event IN ('view', 'addtocart', 'transaction');

CREATE TEMP TABLE pe AS
SELECT u, i, e,
       count(*) FILTER (WHERE k = 0) AS v, count(*) FILTER (WHERE k = 1) AS c,
       count(*) FILTER (WHERE k = 2) AS p
FROM ev SEMI JOIN (SELECT u, e FROM ev GROUP BY u, e HAVING count(*) <= 1000) ok USING (u, e)
GROUP BY u, i, e;

CREATE TEMP TABLE firsts AS
SELECT *, e = min(e) OVER (PARTITION BY u, i) AS first FROM pe;

CREATE TEMP TABLE examples AS
WITH
pair_lag AS (
  SELECT u, i, e, p > 0 AS label,
         coalesce(sum(v) OVER w, 0) AS p_views, coalesce(sum(c) OVER w, 0) AS p_carts
  FROM pe WINDOW w AS (PARTITION BY u, i ORDER BY e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
user_epoch AS (
  SELECT u, e, sum(v) AS v, sum(c) AS c, sum(p) AS p, count(*) FILTER (WHERE first) AS n
  FROM firsts GROUP BY u, e),
user_lag AS (
  SELECT u, e, coalesce(sum(v) OVER w, 0) AS u_views, coalesce(sum(c) OVER w, 0) AS u_carts,
         coalesce(sum(p) OVER w, 0) AS u_purchases, coalesce(sum(n) OVER w, 0) AS u_items
  FROM user_epoch WINDOW w AS (PARTITION BY u ORDER BY e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
item_epoch AS (
  SELECT i, e, sum(v) AS v, sum(c) AS c, sum(p) AS p, count(*) FILTER (WHERE first) AS n
  FROM firsts GROUP BY i, e),
item_lag AS (
  SELECT i, e, coalesce(sum(v) OVER w, 0) AS i_views, coalesce(sum(c) OVER w, 0) AS i_carts,
         coalesce(sum(p) OVER w, 0) AS i_purchases, coalesce(sum(n) OVER w, 0) AS i_users
  FROM item_epoch WINDOW w AS (PARTITION BY i ORDER BY e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))
SELECT e AS epoch, u AS user, i AS item, label,
       u_views, u_carts, u_purchases, u_items, i_views, i_carts, i_purchases, i_users,
       p_views, p_carts
FROM pair_lag JOIN user_lag USING (u, e) JOIN item_lag USING (i, e)
ORDER BY epoch, user, item;
"""


def train(epochs, x, y):
    """Scores each epoch with the model and scaler of the earlier epochs,
    then trains on it; returns the progressive predictions."""
    scaler = StandardScaler()
    model = SGDClassifier(loss="log_loss", alpha=1e-6, random_state=0)
    predictions = np.full(len(y), 0.5)
    starts = np.flatnonzero(np.r_[True, np.diff(epochs) != 0])
    ends = np.r_[starts[1:], len(y)]
    seen = False
    for start, end in zip(starts, ends):
        batch = x[start:end]
        scaled = scaler.transform(batch) if seen else np.zeros_like(batch)
        if seen:
            predictions[start:end] = model.predict_proba(scaled)[:, 1]
        model.partial_fit(scaled, y[start:end], classes=[0, 1])
        scaler.partial_fit(batch)
        seen = True
    return predictions


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events")
    parser.add_argument("--examples-out")
    args = parser.parse_args()

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(SQL.format(path=args.events.replace("'", "''")))
    columns = con.execute("SELECT epoch, label, " + ", ".join(FEATURES) +
                          " FROM examples ORDER BY epoch, user, item").fetchnumpy()
    features_done = time.perf_counter()

    x = np.log1p(np.column_stack([columns[name] for name in FEATURES]).astype(np.float64))
    y = columns["label"].astype(np.int64)
    predictions = train(columns["epoch"], x, y)
    model_done = time.perf_counter()

    if args.examples_out:
        con.execute(f"COPY examples TO '{args.examples_out}' (HEADER)")
    print(json.dumps({
        "tool": "DuckDB + scikit-learn SGDClassifier",
        "scope": "full task: clean, features, examples (DuckDB), progressive SGD (sklearn)",
        "feature_seconds": features_done - started,
        "model_seconds": model_done - features_done,
        "seconds": model_done - started,
        "examples": int(len(y)),
        "positives": int(y.sum()),
        "log_loss": float(log_loss(y, predictions, labels=[0, 1])),
        "auc": float(roc_auc_score(y, predictions)) if 0 < y.sum() < len(y) else 0.5,
    }))


if __name__ == "__main__":
    main()
