"""The Streamlit example (examples/streamlit/app.py) run headless by Streamlit's AppTest against
a real `snapkv demo` reader: what its widgets show follows what the reader's /query answers."""

from pathlib import Path
from typing import Any

from snapkv.client import Client

APP = Path(__file__).resolve().parents[2] / "examples" / "streamlit" / "app.py"


def test_the_app_follows_its_widgets(demo: str, monkeypatch: Any) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SNAPKV_URL", demo)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert len(at.selectbox(key="country").options) == 20

    at.selectbox(key="country").select("SE").run()
    at.slider(key="min_views").set_value(2_000_000).run()
    at.slider(key="top_n").set_value(7).run()
    assert not at.exception, at.exception

    with Client(demo) as c:
        where = {"views": {">=": 2_000_000}}
        expected = c.query("content", {"prefix": "SE/", "filter": where, "fields": ["title", "views"],
                                       "order_by": [{"field": "views", "desc": True}], "limit": 7})
        count = c.query("content", {"prefix": "SE/", "filter": where,
                                    "aggregates": {"n": {"count": "*"}}})["rows"][0]["n"]
    shown = at.dataframe[0].value
    assert list(shown["key"]) == [r["key"] for r in expected["rows"]]
    assert list(shown["views"]) == [r["views"] for r in expected["rows"]]
    assert all(v >= 2_000_000 for v in shown["views"])
    assert at.metric[0].value == f"{count:,}"
    assert "Top 7 titles by views in SE" in at.subheader[0].value
