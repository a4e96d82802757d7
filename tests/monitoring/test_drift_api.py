"""keel.monitoring's public names, and a standalone comparison that stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import keel.monitoring


def test_public_names_are_exactly_the_documented_ones():
    assert sorted(keel.monitoring.__all__) == sorted(
        [
            "DEFAULT_THRESHOLDS",
            "LARGE_SAMPLE",
            "METHODS",
            "Alert",
            "CategoricalColumn",
            "ColumnDrift",
            "CommandSink",
            "DriftReport",
            "Issue",
            "MonitorResult",
            "MonitorSettings",
            "NumericColumn",
            "PageHinkley",
            "Profile",
            "Profiler",
            "Sink",
            "WebhookSink",
            "compare",
            "configure_monitor",
            "default_method",
            "get_monitor_settings",
            "get_reference",
            "list_alerts",
            "monitor_history",
            "parse_window",
            "profile",
            "reference_info",
            "run_monitor",
            "set_reference",
            "write_html",
        ]
    )
    for name in keel.monitoring.__all__:
        assert getattr(keel.monitoring, name) is not None


LIGHT = """
import sys
from keel.monitoring import compare
report = compare(sys.argv[1], sys.argv[2])
assert report.columns["x"].drifted and not report.columns["c"].drifted
print(",".join(m for m in ("sqlalchemy", "pandas", "keel.store", "plotly") if m in sys.modules))
"""


def test_comparing_two_files_loads_neither_the_store_nor_pandas(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name, shift in (("a", 0.0), ("b", 1.0)):
        pq.write_table(
            pa.table({"x": rng.normal(size=5_000) + shift, "c": rng.choice(["u", "v"], 5_000)}),
            tmp_path / f"{name}.parquet",
        )
    out = subprocess.run(
        [sys.executable, "-c", LIGHT, str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""
