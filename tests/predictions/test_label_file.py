"""``read_label_file``: a CSV or Parquet of late labels, ready to join by request id."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from keel.errors import InvalidInput
from keel.predictions.feedback import read_label_file


def test_a_csv_of_labels_gives_text_ids_and_rows_with_gaps(tmp_path: Path):
    file = tmp_path / "labels.csv"
    file.write_text("request_id,label,row\n101,1,0\nabc,0,\n")
    labels = read_label_file(file)
    # A numeric-looking id still matches the string id the server logged.
    assert labels.request_ids == ["101", "abc"]
    assert [int(v) for v in labels.labels] == [1, 0]
    assert labels.rows == [0, None]


def test_a_parquet_of_labels_without_rows_labels_whole_requests(tmp_path: Path):
    file = tmp_path / "labels.parquet"
    pd.DataFrame({"request_id": ["r1", "r2"], "label": ["yes", "no"]}).to_parquet(file)
    labels = read_label_file(file)
    assert labels.request_ids == ["r1", "r2"]
    assert labels.labels == ["yes", "no"]
    assert labels.rows is None


def test_a_label_file_without_the_label_column_says_which_is_missing(tmp_path: Path):
    file = tmp_path / "labels.csv"
    file.write_text("request_id,truth\nr1,1\n")
    with pytest.raises(InvalidInput, match=r"needs columns request_id and label; missing label$"):
        read_label_file(file)


def test_a_label_file_of_another_format_is_refused(tmp_path: Path):
    file = tmp_path / "labels.json"
    file.write_text("[]")
    with pytest.raises(InvalidInput, match=r"must be \.parquet or \.csv, got '\.json'"):
        read_label_file(file)


def test_a_missing_label_file_is_named(tmp_path: Path):
    with pytest.raises(InvalidInput, match=r"labels\.csv does not exist"):
        read_label_file(tmp_path / "labels.csv")
