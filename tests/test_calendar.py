import numpy as np
import pytest

from openvpp.core.calendar import DayKind, coverage, day_kinds, holiday_name, is_working
from openvpp.core.errors import InvalidInput


def d(*days: str) -> np.ndarray:
    return np.array(days, dtype="datetime64[D]")


def test_national_day_2025_is_a_holiday_and_its_make_up_sunday_and_saturday_are_working():
    kinds = day_kinds(d("2025-10-01", "2025-10-08", "2025-09-28", "2025-10-11", "2025-10-09"))
    assert kinds.dtype == np.int8
    assert kinds.tolist() == [
        DayKind.HOLIDAY,
        DayKind.HOLIDAY,
        DayKind.WORKING,
        DayKind.WORKING,
        DayKind.WORKING,
    ]
    assert holiday_name("2025-10-01") == "National Day"


def test_new_year_2025_is_a_holiday():
    assert day_kinds(d("2025-01-01")).tolist() == [DayKind.HOLIDAY]


def test_ordinary_weekend_is_rest_and_weekdays_are_working():
    # 2025-03-08 Saturday, 2025-03-09 Sunday, 2025-03-10 Monday
    assert day_kinds(d("2025-03-08", "2025-03-09", "2025-03-10")).tolist() == [1, 1, 0]
    assert holiday_name("2025-03-08") is None


def test_spring_festival_2024_with_its_make_up_sundays():
    # 2024-02-04 and 2024-02-18 (Sundays) were make-up working days; 10-17 Feb the break
    days = np.arange(np.datetime64("2024-02-04"), np.datetime64("2024-02-19"))
    kinds = day_kinds(days)
    assert kinds[0] == DayKind.WORKING
    assert (kinds[6:14] == DayKind.HOLIDAY).all()
    assert kinds[14] == DayKind.WORKING
    assert is_working(days).sum() == 7


def test_is_working_keeps_shape():
    days = d("2025-10-01", "2025-09-28", "2025-03-08", "2025-03-10").reshape(2, 2)
    assert is_working(days).tolist() == [[False, True], [False, True]]


def test_every_covered_year_has_its_new_year_holiday():
    lo, hi = coverage()
    assert lo <= 2018 and hi >= 2026
    years = np.array([f"{y}-01-01" for y in range(lo, hi + 1)], dtype="datetime64[D]")
    assert (day_kinds(years) == DayKind.HOLIDAY).all()


def test_dates_outside_coverage_name_the_field_or_fall_back_to_weekdays():
    with pytest.raises(InvalidInput) as err:
        day_kinds(d("2030-01-01"))
    assert err.value.violations[0].field == "dates"
    # 2030-01-05 is a Saturday
    assert day_kinds(d("2030-01-01", "2030-01-05", "2025-10-01"), strict=False).tolist() == [0, 1, 2]
