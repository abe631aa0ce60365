"""River's online pipeline (StandardScaler | LogisticRegression) over the
examples of the reference task: predict_proba_one, then learn_one, per
example in epoch order. Model part only: the examples come from
duckdb_sklearn.py --examples-out, and only the predict/learn loop is timed.

Usage: python river_online.py EXAMPLES.csv
Prints one JSON object (see examples.summary).
"""

import json
import sys
import time

from river import linear_model, preprocessing

import examples


def main():
    features, labels = examples.read(sys.argv[1])
    rows = [dict(zip(examples.FEATURES, values)) for values in features]
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    predictions = []

    started = time.perf_counter()
    for x, y in zip(rows, labels):
        predictions.append(model.predict_proba_one(x).get(True, 0.5))
        model.learn_one(x, y)
    seconds = time.perf_counter() - started

    print(json.dumps(examples.summary(
        "River StandardScaler + LogisticRegression",
        "model only (learn_one/predict_one per example); features from DuckDB",
        seconds, labels, predictions)))


if __name__ == "__main__":
    main()
