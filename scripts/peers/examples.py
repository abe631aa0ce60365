"""Reads the examples CSV written by duckdb_sklearn.py --examples-out, for the
online peers: epoch order, the ten ln(1 + a) features, the labels."""

import csv
import math

FEATURES = ["u_views", "u_carts", "u_purchases", "u_items",
            "i_views", "i_carts", "i_purchases", "i_users",
            "p_views", "p_carts"]


def read(path):
    """Returns (features, labels): a list of ten-float lists and a list of
    bools, in the file's (epoch, user, item) order."""
    features, labels = [], []
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            features.append([math.log1p(float(row[name])) for name in FEATURES])
            labels.append(row["label"] == "true")
    return features, labels


def summary(tool, scope, seconds, labels, predictions):
    """The JSON object every peer prints: what it timed and how well it did."""
    from sklearn.metrics import log_loss, roc_auc_score
    positives = sum(labels)
    return {
        "tool": tool,
        "scope": scope,
        "seconds": seconds,
        "examples": len(labels),
        "positives": positives,
        "log_loss": float(log_loss(labels, predictions, labels=[False, True])),
        "auc": float(roc_auc_score(labels, predictions)) if 0 < positives < len(labels) else 0.5,
    }
