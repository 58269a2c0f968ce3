"""Synthetic viewing events, standing in for the partitioned table a real job would read.

Every title's events are generated from a random generator seeded with ``(seed, title
number)``, so a title's events are the same whichever worker loads them and in whatever
grouping: a shard of titles reads exactly the rows the full table holds for those titles.
"""

from __future__ import annotations

import datetime as dt
from typing import List, Sequence

import numpy as np
import pandas as pd

#: The first day of events; ``days`` days are generated from it.
FIRST_DAY = dt.date(2026, 11, 1)
#: Size of the audience: small enough that people rewatch a title on the same day.
USERS = 2_000
DEVICES = ["tv", "mobile", "web", "tablet"]
DEVICE_SHARE = [0.55, 0.25, 0.15, 0.05]
#: A play counts as completed from this share of the title's runtime.
COMPLETION_THRESHOLD = 0.9


def title_ids(count: int) -> List[str]:
    """The catalogue: ``t000001`` to ``t{count:06d}``."""
    return [f"t{n:06d}" for n in range(1, count + 1)]


def load_events(titles: Sequence[str], days: int, seed: int) -> pd.DataFrame:
    """The viewing events of ``titles`` over ``days`` days from ``FIRST_DAY``, one row per play.

    Columns: ``title_id`` (str), ``user_id`` (int64), ``started_at`` (UTC timestamp),
    ``device`` (str), ``minutes_watched`` (int64) and ``completed`` (bool). Popularity is
    long-tailed (log-normal): a few titles get hundreds of plays a day, many only a handful,
    and some get none on some days.
    """
    frames = []
    day_start = pd.Timestamp(FIRST_DAY, tz="UTC")
    for title in titles:
        rng = np.random.default_rng([seed, int(title.lstrip("t"))])
        runtime = int(rng.integers(22, 150))
        plays_per_day = rng.poisson(rng.lognormal(mean=2.5, sigma=1.0), size=days)
        plays = int(plays_per_day.sum())
        day = np.repeat(np.arange(days), plays_per_day)
        second = rng.integers(0, 24 * 3600, size=plays)
        watched = np.ceil(runtime * rng.beta(2.0, 1.2, size=plays)).astype("int64")
        frames.append(
            pd.DataFrame(
                {
                    "title_id": title,
                    "user_id": rng.integers(1, USERS + 1, size=plays, dtype="int64"),
                    "started_at": day_start + pd.to_timedelta(day * 86_400 + second, unit="s"),
                    "device": rng.choice(DEVICES, size=plays, p=DEVICE_SHARE),
                    "minutes_watched": watched,
                    "completed": watched >= COMPLETION_THRESHOLD * runtime,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
