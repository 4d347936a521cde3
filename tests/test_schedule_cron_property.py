"""Which ticks a schedule finds, checked against a brute-force walker.

The cron library (cronsim) is trusted for parsing; what is ours is how ticks are
found around an instant (the first tick after it, the ticks in a window, the
bounds at both ends) and what the catch-up policies keep. The walker below knows
cron's rules directly: a minute matches when each field's set holds it, and the
day matches on day-of-month AND day-of-week when either field starts with ``*``,
else on either (Vixie/Debian cron, and Cloudflare's)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from workkit_workflow import Schedule
from workkit_workflow.definitions._schedule import ON_TIME

NAMES = {"dow": ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]}
RANGES = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 28), "month": (1, 12), "dow": (0, 6)}


@st.composite
def field(draw: st.DrawFn, kind: str) -> str:
    low, high = RANGES[kind]
    shape = draw(st.sampled_from(["star", "step", "range", "list", "one"]))
    if shape == "star":
        return "*"
    if shape == "step":
        return f"*/{draw(st.integers(1, high - low + 1))}"
    if shape == "range":
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        step = draw(st.integers(1, 5))
        return f"{a}-{b}" + (f"/{step}" if step > 1 else "")
    values = draw(st.lists(st.integers(low, high), min_size=1, max_size=4, unique=True))
    if kind == "dow" and draw(st.booleans()):
        return ",".join(NAMES["dow"][v] for v in values)
    return ",".join(str(v) for v in values)


crons = st.tuples(*(field(k) for k in ("minute", "hour", "dom", "month", "dow"))).map(" ".join)


def values(spec: str, kind: str) -> set[int]:
    low, high = RANGES[kind]
    if kind == "dom":
        high = 31
    out: set[int] = set()
    for part in spec.split(","):
        if part in NAMES.get(kind, []):
            out.add(NAMES[kind].index(part))
            continue
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            a, b = low, high
        elif "-" in base:
            a, b = (int(x) for x in base.split("-"))
        else:
            a = b = int(base)
        out.update(range(a, b + 1, step))
    return out


def day_matcher(cron: str) -> Callable[[datetime], bool]:
    _, _, dom, month, dow = cron.split()
    months, doms, dows = values(month, "month"), values(dom, "dom"), values(dow, "dow")
    both = not (dom.startswith("*") or dow.startswith("*"))

    def matches(day: datetime) -> bool:
        if day.month not in months:
            return False
        dom_ok = day.day in doms
        dow_ok = (day.isoweekday() % 7) in dows
        return (dom_ok or dow_ok) if both else (dom_ok and dow_ok)

    return matches


def walk(cron: str, after: float, until: float, *, first: bool = False) -> list[float]:
    """Every tick in ``(after, until]`` (or only the first), minute by minute on the
    days that match."""
    minute, hour = cron.split()[:2]
    minutes, hours = sorted(values(minute, "minute")), sorted(values(hour, "hour"))
    matches_day = day_matcher(cron)
    day = datetime.fromtimestamp(after, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    found: list[float] = []
    while day.timestamp() <= until:
        if matches_day(day):
            for h in hours:
                for m in minutes:
                    at = (day + timedelta(hours=h, minutes=m)).timestamp()
                    if after < at <= until:
                        found.append(at)
                        if first:
                            return found
        day += timedelta(days=1)
    return found


instants = st.floats(min_value=1.7e9, max_value=1.9e9, allow_nan=False)
windows = st.floats(min_value=0.0, max_value=4 * 86400.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(cron=crons, now=instants, window=windows, bound=st.integers(1, 50))
def test_due_ticks_match_the_walker(cron: str, now: float, window: float, bound: int) -> None:
    last = now - window
    expected = walk(cron, last, now)
    for policy in ("latest", "all", "none"):
        schedule = Schedule("p", cron=cron, workflow="w", catch_up=policy, max_catch_up=bound, register=False)  # type: ignore[arg-type]
        ticks, record = schedule.due(last, now)
        assert record == (expected[-1] if expected else None)
        if policy == "all":
            assert ticks == expected[-bound:]
        elif policy == "latest":
            assert ticks == expected[-1:]
        else:
            assert ticks == [t for t in expected[-1:] if now - t < ON_TIME]


@settings(max_examples=300, deadline=None)
@given(cron=crons, now=instants)
def test_a_new_schedule_only_sees_an_on_time_tick(cron: str, now: float) -> None:
    schedule = Schedule("p", cron=cron, workflow="w", catch_up="all", register=False)
    ticks, record = schedule.due(None, now)
    on_time = walk(cron, now - ON_TIME, now)[-1:]
    assert ticks == on_time
    # With no tick on time, the firing's own time is where the schedule starts from.
    assert record == (on_time[0] if on_time else now)


@settings(max_examples=200, deadline=None)
@given(cron=crons, after=instants)
@example(cron="* * 12 2 */5", after=1802476740.0)  # the next one is 6 years on
@example(cron="* * * * 1-1/2", after=1700000000.0)  # cronsim's one-value range step
def test_next_tick_is_the_walkers_first_tick(cron: str, after: float) -> None:
    schedule = Schedule("p", cron=cron, workflow="w", register=False)
    # Every generated cron fires within 28 years (day-of-month stays <= 28, and the
    # calendar repeats its weekdays every 28 years).
    found = walk(cron, after, after + 28 * 366 * 86400.0, first=True)
    assert found, cron
    assert schedule.next_tick(after) == found[0]
