"""Vowpal Wabbit (logistic loss, its default adaptive normalised updates) over
the examples of the reference task: predict, then learn, per example in
epoch order, through the Python bindings. Model part only: the examples come
from duckdb_sklearn.py --examples-out; building VW's text lines and the
timed predict/learn loop are separate.

Usage: python vw_online.py EXAMPLES.csv
Prints one JSON object (see examples.summary).
"""

import json
import sys
import time

from vowpalwabbit import Workspace

import examples


def main():
    features, labels = examples.read(sys.argv[1])
    lines = [("1" if y else "-1") + " |f " +
             " ".join(f"{name}:{value:.6f}" for name, value in zip(examples.FEATURES, x))
             for x, y in zip(features, labels)]
    vw = Workspace("--loss_function logistic --link logistic --quiet")
    predictions = []

    started = time.perf_counter()
    for line in lines:
        example = vw.parse(line)
        predictions.append(vw.predict(example))
        vw.learn(example)
        vw.finish_example(example)
    seconds = time.perf_counter() - started
    vw.finish()

    print(json.dumps(examples.summary(
        "Vowpal Wabbit (Python bindings)",
        "model only (predict + learn per example); features from DuckDB",
        seconds, labels, predictions)))


if __name__ == "__main__":
    main()
