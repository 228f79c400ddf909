import numpy as np
import pytest

from openvpp.core.calendar import DayKind, calendar_record, coverage, day_kinds, holiday_name, is_working
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


def test_a_day_past_coverage_falls_back_and_says_so():
    """New Year's Day after the last covered year (2027-01-01 today: the State Council had not announced 2027
    and chinese_calendar 1.11.0 does not know it) is a public holiday, but without strict it is classified by
    the Monday-Friday rule, and it is named among the fallback days; covered days never are."""
    hi = coverage()[1]
    new_year, last = np.datetime64(f"{hi + 1}-01-01"), np.datetime64(f"{hi}-12-31")
    days = np.array([new_year + 1, last, new_year, new_year]).reshape(2, 2)
    kinds, fallback = day_kinds(days, strict=False, with_fallback=True)
    weekday = [DayKind.WORKING if np.is_busday(x) else DayKind.REST for x in (new_year + 1, new_year)]
    assert kinds.tolist() == [[weekday[0], day_kinds(np.array([last]))[0]], [weekday[1], weekday[1]]]
    assert fallback.tolist() == [new_year.item(), (new_year + 1).item()]
    inside = day_kinds(d("2025-10-01", f"{hi}-01-01"), strict=False, with_fallback=True)
    assert inside.kinds.tolist() == [DayKind.HOLIDAY, DayKind.HOLIDAY] and inside.fallback_days.size == 0
    assert day_kinds(d("2025-10-01"), with_fallback=True).fallback_days.size == 0
    with pytest.raises(InvalidInput):
        day_kinds(np.array([new_year]), with_fallback=True)          # strict still refuses


def test_calendar_record_names_the_source_coverage_and_fallback_days():
    hi = coverage()[1]
    history = np.arange(np.datetime64(f"{hi}-12-20"), np.datetime64(f"{hi + 1}-01-05"))
    rec = calendar_record(history)
    assert rec["covered"] == list(coverage()) and "State Council" in rec["source"]
    assert rec["fallback_days"] == [f"{hi + 1}-01-0{i}" for i in range(1, 5)]
    assert calendar_record(d("2025-07-15"))["fallback_days"] == []
