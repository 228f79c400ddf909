"""Generate ``src/openvpp/core/holidays_cn.json`` from the ``chinese_calendar`` package.

Run once when the State Council publishes a new year's holiday arrangement
(usually in November), after upgrading ``chinese_calendar``::

    python scripts/gen_holidays.py --first-year 2018 --last-year 2026

The output is committed as data, so the runtime never needs the package. The
facts themselves are the State Council's yearly notices (国务院办公厅关于
<year>年部分节假日安排的通知).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "openvpp" / "core" / "holidays_cn.json"


def build(first_year: int, last_year: int) -> dict:
    import chinese_calendar
    from chinese_calendar import constants

    def in_range(day: dt.date) -> bool:
        return first_year <= day.year <= last_year

    holidays = {d.isoformat(): str(name) for d, name in sorted(constants.holidays.items()) if in_range(d)}
    workdays = {d.isoformat(): str(name) for d, name in sorted(constants.workdays.items()) if in_range(d)}
    missing = [y for y in range(first_year, last_year + 1) if not any(k.startswith(str(y)) for k in holidays)]
    if missing:
        raise SystemExit(f"chinese_calendar {chinese_calendar.__version__} has no holidays for {missing}")
    return {
        "source": "State Council holiday notices, via chinese_calendar "
        f"{chinese_calendar.__version__} (scripts/gen_holidays.py)",
        "first_year": first_year,
        "last_year": last_year,
        "holidays": holidays,
        "workdays": workdays,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--first-year", type=int, default=2018)
    parser.add_argument("--last-year", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data = build(args.first_year, args.last_year)
    args.out.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(data['holidays'])} holidays, {len(data['workdays'])} make-up working days")


if __name__ == "__main__":
    main()
