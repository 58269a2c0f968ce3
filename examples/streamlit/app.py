"""Explore the demo dataset live: pick a country and thresholds, and the reader computes the
answer next to the data (`POST /v1/datasets/content/query`) for the charts.

    snapkv demo                                   # serves `content` on 127.0.0.1:8080
    pip install streamlit ./python
    SNAPKV_URL=http://127.0.0.1:8080 streamlit run examples/streamlit/app.py

Every widget change is one or two small queries: the rows never leave the reader.
"""

import os
from typing import Any, Dict, List

import pandas as pd
import streamlit as st

from snapkv.client import Client

URL = os.environ.get("SNAPKV_URL", "http://127.0.0.1:8080")
DATASET = os.environ.get("SNAPKV_DATASET", "content")
METRICS = {"views": "Views", "hours_viewed": "Hours viewed"}


@st.cache_resource
def client() -> Client:
    return Client(URL)


def query(q: Dict[str, Any]) -> Dict[str, Any]:
    return client().query(DATASET, q)


@st.cache_data(ttl=60)
def countries() -> List[str]:
    rows = query({"group_by": ["country"], "aggregates": {"n": {"count": "*"}}})["rows"]
    return [r["country"] for r in rows]


st.set_page_config(page_title="snapkv explorer", layout="wide")
st.title("Content performance")
st.caption(f"{DATASET} at {URL}, computed by the reader")

with st.sidebar:
    country = st.selectbox("Country", countries(), key="country")
    metric = st.radio("Metric", list(METRICS), format_func=METRICS.get, key="metric")
    min_views = st.slider("Minimum views", 0, 5_000_000, 0, step=100_000, key="min_views")
    top_n = st.slider("Titles", 5, 50, 10, key="top_n")

where = {"views": {">=": min_views}}
summary = query(
    {
        "prefix": f"{country}/",
        "filter": where,
        "aggregates": {
            "titles": {"count": "*"},
            "total": {"sum": metric},
            "p90": {"percentile": {"field": metric, "p": 90}},
        },
    }
)
s = summary["rows"][0] if summary["rows"] else {"titles": 0, "total": 0, "p90": None}
col1, col2, col3 = st.columns(3)
col1.metric("Titles", f"{s['titles']:,}")
col2.metric(f"Total {METRICS[metric].lower()}", f"{s['total']:,.0f}")
col3.metric("90th percentile", "-" if s["p90"] is None else f"{s['p90']:,.0f}")

top = query(
    {
        "prefix": f"{country}/",
        "filter": where,
        "fields": ["title", metric],
        "order_by": [{"field": metric, "desc": True}],
        "limit": top_n,
    }
)["rows"]
frame = pd.DataFrame(top, columns=["key", "title", metric])
st.subheader(f"Top {top_n} titles by {METRICS[metric].lower()} in {country}")
st.bar_chart(frame, x="title", y=metric)
st.dataframe(frame, hide_index=True)
st.caption(
    f"version {summary['version']}: {summary['stats']['rows_scanned']:,} rows read in "
    f"{summary['stats']['elapsed_ms']:.1f} ms"
)
