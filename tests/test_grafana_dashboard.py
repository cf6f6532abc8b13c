"""deploy/grafana-dashboard.json is a Grafana dashboard whose queries name only
metrics that /metrics exposes."""

import json
import re

from tests.servers import BASE_DIR

DASHBOARD = BASE_DIR / "deploy" / "grafana-dashboard.json"
# A metric name in PromQL: an identifier that is not a function, keyword or
# label, i.e. one followed by `{` or `[` (every query here selects by `job`).
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def exposed_series(text: str) -> set[str]:
    """Every series name the exposition can hold, samples or not yet."""
    names = set()
    for name, kind in TYPE_LINE.findall(text):
        names.update(name + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


def panel_queries(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {item["name"]: item for item in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


def test_every_query_names_a_metric_the_app_exposes(client):
    exposed = exposed_series(client.get("/metrics").content.decode())
    queries = panel_queries(json.loads(DASHBOARD.read_text()))
    named = {name for query in queries for name in SELECTOR.findall(query)}
    assert named >= {
        "chat_sockets_open",
        "chat_room_subscriptions",
        "chat_messages_stored_total",
        "chat_messages_delivered_total",
        "chat_errors_total",
        "chat_fanout_latency_seconds_bucket",
        "chat_http_requests_total",
        "chat_http_request_duration_seconds_bucket",
    }
    assert named <= exposed, named - exposed
