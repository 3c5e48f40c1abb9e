"""GLUE's tasks: their text columns, labels, metrics and evaluation splits. Imports nothing
(no torch): the report reads the metric names from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlueTask:
    text_columns: tuple[str, ...]  # one sentence or a pair
    num_labels: int  # 1: regression (STS-B's similarity in [0, 5])
    metrics: tuple[str, ...]  # the first is the task's score
    test_splits: tuple[tuple[str, str], ...] = (("", "validation"),)  # (key suffix, split)
    label_range: tuple[float, float] = (0.0, 0.0)  # a regression's labels: lowest, highest


TASKS = {
    "cola": GlueTask(("sentence",), 2, ("matthews_correlation",)),
    "sst2": GlueTask(("sentence",), 2, ("accuracy",)),
    "mrpc": GlueTask(("sentence1", "sentence2"), 2, ("f1", "accuracy")),
    "stsb": GlueTask(("sentence1", "sentence2"), 1, ("pearson", "spearman"),
                     label_range=(0.0, 5.0)),
    "qqp": GlueTask(("question1", "question2"), 2, ("f1", "accuracy")),
    "mnli": GlueTask(("premise", "hypothesis"), 3, ("accuracy",),
                     (("", "validation_matched"), ("_mismatched", "validation_mismatched"))),
    "qnli": GlueTask(("question", "sentence"), 2, ("accuracy",)),
    "rte": GlueTask(("sentence1", "sentence2"), 2, ("accuracy",)),
}
