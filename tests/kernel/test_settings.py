"""Database settings that do what they say: retention turned off explicitly, never by accident."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from zhizao.settings import DatabaseSettings


@pytest.mark.parametrize("value", ["off", "OFF", "none", " off "])
def test_retention_is_turned_off_by_writing_off(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ZHIZAO_DB_METRIC_RETENTION_DAYS", value)
    assert DatabaseSettings().metric_retention_days is None


def test_retention_days_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIZAO_DB_METRIC_RETENTION_DAYS", "30")
    assert DatabaseSettings().metric_retention_days == 30


@pytest.mark.parametrize(
    ("value", "says"),
    [("0", "write off to keep them for ever"), ("", "valid integer"), ("never", "valid integer")],
)
def test_a_value_that_is_neither_days_nor_off_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("ZHIZAO_DB_METRIC_RETENTION_DAYS", value)
    with pytest.raises(ValidationError, match="metric_retention_days") as caught:
        DatabaseSettings()
    assert says in str(caught.value)
