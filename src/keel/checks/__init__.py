"""CI/CD checks for models: metrics on a holdout, gates, baselines, slices, data validation."""

from keel.checks.gates import CheckReport, Gate, Rules, evaluate, load_rules
from keel.checks.metrics import classification_metrics, infer_task, regression_metrics
from keel.checks.runner import check_model_version, latest_check, read_table

__all__ = [
    "CheckReport",
    "Gate",
    "Rules",
    "check_model_version",
    "classification_metrics",
    "evaluate",
    "infer_task",
    "latest_check",
    "load_rules",
    "read_table",
    "regression_metrics",
]
