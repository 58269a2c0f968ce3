"""The Metaflow example (examples/metaflow) run by Metaflow's local runtime, its published
snapshot checked against aggregates computed here from the same synthetic events: read through
`snapkv.Snapshot` from the store's version folder, and over HTTP from `snapkv serve`."""

import collections
import datetime
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import snapkv

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "metaflow"
DATASET = "title-daily-stats"
# Small enough for a short run, large enough for several shards and title-days without plays.
TITLES, DAYS, SHARDS, SEED = 40, 5, 2, 7


def load_example_module(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_daily_stats():
    """``{"title_id/day": value}`` from the example's events, aggregated row by row, and every
    ``title_id/day`` of the catalogue and period, with plays or not."""
    events = load_example_module("viewing_events")
    titles = events.title_ids(TITLES)
    days = [events.FIRST_DAY + datetime.timedelta(days=d) for d in range(DAYS)]
    all_keys = [f"{title}/{day.isoformat()}" for title in titles for day in days]
    rows = events.load_events(titles, days=DAYS, seed=SEED)
    plays = collections.Counter()
    viewers = collections.defaultdict(set)
    minutes = collections.Counter()
    completed = collections.Counter()
    columns = ["title_id", "user_id", "started_at", "minutes_watched", "completed"]
    for title, user, started_at, watched, done in zip(*(rows[c] for c in columns)):
        key = f"{title}/{started_at.strftime('%Y-%m-%d')}"
        plays[key] += 1
        viewers[key].add(int(user))
        minutes[key] += int(watched)
        completed[key] += bool(done)
    return all_keys, {
        key: {
            "plays": plays[key],
            "viewers": len(viewers[key]),
            "minutes_watched": minutes[key],
            "completion_rate": completed[key] / plays[key],
        }
        for key in plays
    }


def assert_matches(value, expected, key):
    # The flow rounds the completion rate to 3 decimals; every other field is an exact count.
    rate = pytest.approx(expected["completion_rate"], abs=5e-4 + 1e-12)
    assert value == {**expected, "completion_rate": rate}, key


def run_flow(tmp_path, store):
    """Runs the flow with Metaflow's local runtime, its datastore, metadata and configuration
    confined to ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    env.update(
        # No ~/.metaflowconfig: local datastore and metadata, whatever the machine's profile.
        METAFLOW_HOME=str(tmp_path / "metaflow-home"),
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DEFAULT_METADATA="local",
        # .metaflow (artifacts and run metadata) goes here, not into the working directory
        # or the first parent directory that holds one.
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(tmp_path),
        # Metaflow refuses to run without a user name, and root does not count as one.
        METAFLOW_USER="snapkv-test",
    )
    args = [
        sys.executable, str(EXAMPLE / "flow.py"), "--no-pylint", "run",
        "--store", str(store), "--dataset", DATASET,
        "--titles", str(TITLES), "--days", str(DAYS), "--shards", str(SHARDS), "--seed", str(SEED),
    ]  # fmt: skip
    run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"the flow failed (exit {run.returncode}):\n{output}"
    return output


def test_flow_publishes_per_title_daily_stats(tmp_path, serve):
    if importlib.util.find_spec("metaflow") is None:
        pytest.fail(f"metaflow is not installed in {sys.executable}: pip install metaflow")
    store = tmp_path / "store"
    log = run_flow(tmp_path, store)
    assert (tmp_path / ".metaflow" / "TitleDailyStatsFlow").is_dir(), log

    current = json.loads((store / DATASET / "CURRENT").read_text())
    version = current["version"]
    assert f"published {DATASET} version {version}" in log, log
    manifest = json.loads((store / DATASET / "versions" / version / "MANIFEST.json").read_text())
    assert [f["name"] for f in manifest["files"]] == [f"{DATASET}.snapkv"]

    all_keys, expected = expected_daily_stats()
    assert set(expected) <= set(all_keys)
    # Title-days without plays have no key.
    missing = next(key for key in all_keys if key not in expected)
    keys = sorted(expected)
    busiest = max(keys, key=lambda k: expected[k]["plays"])
    assert expected[busiest]["viewers"] < expected[busiest]["plays"], "nobody rewatched: weak test"
    samples = [keys[0], keys[len(keys) // 2], keys[-1], busiest]

    snap = snapkv.Snapshot(store / DATASET / "versions" / version / f"{DATASET}.snapkv")
    assert len(snap) == len(expected) == manifest["files"][0]["keys"]
    assert snap.metadata["dataset"] == DATASET
    assert snap.metadata["key_columns"] == ["title_id", "day"]
    assert snap.metadata["user"]["metaflow_run"].startswith("TitleDailyStatsFlow/")
    for key in samples:
        assert_matches(snap[key], expected[key], key)
        assert_matches(snap[tuple(key.split("/"))], expected[key], key)
    with pytest.raises(KeyError):
        snap[missing]
    assert snap.get(missing) is None

    cache = tmp_path / "cache"
    base = serve("--store", str(store), "--dataset", DATASET, "--cache-dir", str(cache))
    # The server is local: never reached through a proxy from the environment.
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:
        for key in samples:
            r = http.get(f"/v1/datasets/{DATASET}/keys/{key}")
            assert r.status_code == 200, r.text
            assert r.headers["x-snapkv-version"] == version
            assert_matches(r.json(), expected[key], key)
        r = http.get(f"/v1/datasets/{DATASET}/keys/{missing}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found", r.text
        # Every key at once, plus the missing one.
        r = http.post(f"/v1/datasets/{DATASET}/mget", json={"keys": keys + [missing]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == version and body["missing"] == [missing]
        assert sorted(body["values"]) == keys
        for key in keys:
            assert_matches(body["values"][key], expected[key], key)
