"""Parsing the event stream: events, multi-line data, and the server's keep-alive comments."""

from modelpress.events import Event, parse


def test_events_data_lines_and_keepalives():
    lines = ["event: status", "id: 3", 'data: {"status":', 'data: "running"}', "", ": keep-alive", "",
             "event: end", 'data: {"status": "succeeded"}', ""]
    assert list(parse(lines)) == [Event("status", {"status": "running"}, "3"), Event("keepalive", {}, None),
                                  Event("end", {"status": "succeeded"}, "3")]
