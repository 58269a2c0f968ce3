"""Daily viewing statistics per title, computed in parallel with pandas and published as a
snapkv snapshot that `snapkv serve` (or `snapkv.Snapshot`) answers by ``title_id/day``.

    python flow.py run --store ./snapkv-store --dataset title-daily-stats

start      splits the catalogue into shards of titles
aggregate  one task per shard (foreach): load its titles' events, aggregate per (title, day)
join       concatenates the shards' aggregates
publish    builds one snapshot file from them and publishes it as a new version of the dataset
end        reports what was published
"""

import os
import tempfile

import pandas as pd
from metaflow import FlowSpec, Parameter, current, step

import snapkv
from viewing_events import load_events, title_ids


class TitleDailyStatsFlow(FlowSpec):
    store = Parameter(
        "store",
        default="./snapkv-store",
        help="Store to publish to: a local directory, file:///DIR or s3://BUCKET/PREFIX "
        "(credentials, region and endpoint from the AWS_* environment variables)",
    )
    dataset = Parameter("dataset", default="title-daily-stats", help="Dataset name in the store")
    titles = Parameter("titles", default=200, type=int, help="Number of titles in the catalogue")
    days = Parameter("days", default=14, type=int, help="Number of days of events")
    shards = Parameter("shards", default=4, type=int, help="Parallel aggregation tasks")
    seed = Parameter("seed", default=42, type=int, help="Seed of the synthetic events")

    @step
    def start(self):
        catalogue = title_ids(self.titles)
        # Every title lands in exactly one shard, so the shards' (title, day) rows are disjoint
        # and their union is the whole table.
        self.title_shards = [catalogue[i :: self.shards] for i in range(self.shards)]
        self.next(self.aggregate, foreach="title_shards")

    @step
    def aggregate(self):
        events = load_events(self.input, days=self.days, seed=self.seed)
        # Days in UTC, as datetime.date: a date column, which snapkv keys as YYYY-MM-DD.
        events["day"] = events["started_at"].dt.date
        self.daily = events.groupby(["title_id", "day"], as_index=False).agg(
            plays=("user_id", "size"),
            viewers=("user_id", "nunique"),
            minutes_watched=("minutes_watched", "sum"),
            completion_rate=("completed", "mean"),
        )
        self.daily["completion_rate"] = self.daily["completion_rate"].round(3)
        print(f"{len(self.input)} titles, {len(events)} plays -> {len(self.daily)} title-days")
        self.next(self.join)

    @step
    def join(self, inputs):
        self.daily = pd.concat([shard.daily for shard in inputs], ignore_index=True)
        self.next(self.publish)

    @step
    def publish(self):
        with tempfile.TemporaryDirectory() as tmp:
            # The file keeps this name in the store: versions/<version>/<dataset>.snapkv.
            path = os.path.join(tmp, f"{self.dataset}.snapkv")
            # Keys are "title_id/day", e.g. "t000042/2026-11-03"; the value is a JSON object of
            # the other columns.
            self.build_summary = snapkv.build(
                self.daily,
                key=["title_id", "day"],
                output=path,
                dataset=self.dataset,
                labels={"metaflow_run": f"{current.flow_name}/{current.run_id}"},
            )
            # The version defaults to the publish time (UTC), so later runs sort as newer.
            self.published = snapkv.publish([path], self.store, self.dataset)
        self.next(self.end)

    @step
    def end(self):
        p = self.published
        print(
            f"published {p['dataset']} version {p['version']} to {self.store}: "
            f"{p['keys']} keys, {p['bytes']} bytes (previous version: {p['previous']})"
        )
        first = self.daily.iloc[0]
        print(
            f"serve it: snapkv serve --store {self.store} --dataset {p['dataset']}\n"
            f"then:     curl localhost:8080/v1/datasets/{p['dataset']}/keys/"
            f"{first['title_id']}/{first['day']}"
        )


if __name__ == "__main__":
    TitleDailyStatsFlow()
