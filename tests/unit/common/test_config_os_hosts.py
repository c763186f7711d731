"""OS_HOSTS (common.config.parse_os_hosts, Settings.opensearch_nodes) and the client and
messages built from it (common.opensearch). Pure: no request is sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opensearchpy import ConnectionError as OpenSearchConnectionError
from opensearchpy import TransportError

from searchsync.common.config import (
    EXIT_CONFIG,
    ConfigError,
    load_settings,
    parse_os_hosts,
    settings_or_exit,
)
from searchsync.common.opensearch import NodesTransport, explain, make_client, nodes_of

THREE = "os-1:9200,os-2:9201,10.0.0.3:9202"


def test_nodes_in_the_order_given() -> None:
    assert parse_os_hosts(THREE) == (("os-1", 9200), ("os-2", 9201), ("10.0.0.3", 9202))
    assert parse_os_hosts(" os-1:9200 ,\tos-2:9200 ") == (("os-1", 9200), ("os-2", 9200))
    assert parse_os_hosts("os.internal.example:443") == (("os.internal.example", 443),)


def test_an_ipv6_address_goes_in_brackets_and_comes_out_without() -> None:
    assert parse_os_hosts("[::1]:9200,[fd00::2]:9201") == (("::1", 9200), ("fd00::2", 9201))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("os-1:9200,", "an empty item"),
        (",os-1:9200", "an empty item"),
        ("os-1:9200,,os-2:9200", "an empty item"),
        ("os-1", "'os-1' has no :port"),
        (":9200", "':9200' has no :port"),
        ("os-1:0", "not a number from 1 to 65535"),
        ("os-1:65536", "not a number from 1 to 65535"),
        ("os-1:port", "not a number from 1 to 65535"),
        ("os-1:", "not a number from 1 to 65535"),
        ("os-1:٩٢٠٠", "not a number from 1 to 65535"),  # Arabic-Indic digits
        ("http://os-1:9200", "is a URL"),
        ("https://os-1:9200", "is a URL"),
        ("os-1:9200/prefix", "is a URL"),
        ("::1:9200", "an IPv6 address goes in brackets"),
        ("[::1]", "'[::1]' has no :port"),
        ("[not-v6]:9200", "not an IPv6 address in the brackets"),
        ("os 1:9200", "is not a host name or IP address"),
        ("-os:9200", "is not a host name or IP address"),
        ("os-1:9200,os-2:9200,os-1:9200", "'os-1:9200' is named twice"),
    ],
)
def test_a_bad_item_is_named_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_os_hosts(raw)
    assert reason in str(info.value)


def test_credentials_in_an_item_are_refused_and_never_echoed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        settings_or_exit({"OS_HOSTS": "os-1:9200,admin:hunter2@os-2:9200"})
    message = capsys.readouterr().err
    assert info.value.code == EXIT_CONFIG
    assert "invalid OS_HOSTS='***'" in message
    assert "OS_USER and OS_PASSWORD" in message
    assert "hunter2" not in message and "admin" not in message


def test_a_bad_value_exits_2_naming_os_hosts_the_item_and_the_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        settings_or_exit({"OS_HOSTS": "os-1:9200,os-2"})
    message = capsys.readouterr().err
    assert info.value.code == EXIT_CONFIG
    assert message.startswith("searchsync: configuration error: invalid OS_HOSTS='os-1:9200,os-2'")
    assert "host:port pairs separated by commas" in message
    assert "'os-2' has no :port" in message
    assert message.count("\n") == 1


def test_os_hosts_overrides_os_host_and_os_port() -> None:
    settings = load_settings({"OS_HOST": "single", "OS_PORT": "9999", "OS_HOSTS": THREE})
    assert settings.opensearch_nodes() == parse_os_hosts(THREE)
    alone = load_settings({"OS_HOST": "single", "OS_PORT": "9999"})
    assert alone.opensearch_nodes() == (("single", 9999),)
    assert load_settings({}).opensearch_nodes() == (("opensearch", 9200),)


def test_a_bad_value_raises_config_error_naming_os_hosts() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"OS_HOSTS": "http://os-1:9200"})
    assert info.value.variable == "OS_HOSTS"


HOST_NAMES = st.from_regex(r"\A[a-z0-9]([a-z0-9\-.]{0,20}[a-z0-9])?\Z")
IPV6 = st.ip_addresses(v=6).map(str)
NODES = st.lists(
    st.tuples(st.one_of(HOST_NAMES, IPV6), st.integers(min_value=1, max_value=65535)),
    min_size=1,
    max_size=6,
    unique=True,
)


@given(NODES)
def test_any_list_of_nodes_written_out_parses_back(nodes: list[tuple[str, int]]) -> None:
    raw = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)
    assert parse_os_hosts(raw) == tuple(nodes)
    settings = load_settings({"OS_HOSTS": raw})
    assert nodes_of(settings) == (raw if len(nodes) == 1 else "one of " + raw.replace(",", ", "))


def test_the_client_gets_every_node_and_keeps_its_own_retries_off() -> None:
    client = make_client(load_settings({"OS_HOSTS": "os-1:9200,[fd00::2]:9201,os-3:9202"}))
    transport = client.transport
    assert [(h["host"], h["port"]) for h in transport.hosts] == [
        ("os-1", 9200),
        ("fd00::2", 9201),
        ("os-3", 9202),
    ]
    assert transport.max_retries == 0 and transport.retry_on_timeout is False
    assert isinstance(transport, NodesTransport)  # a refused connection: the next node
    # the connections are made at the first request; as the transport will make them:
    urls = [transport.connection_class(**h, **transport.kwargs).host for h in transport.hosts]
    assert urls == ["http://os-1:9200", "http://[fd00::2]:9201", "http://os-3:9202"]


def test_one_node_is_named_as_before_several_as_the_list() -> None:
    reason = OSError("Cannot connect to host os-2:9201")
    error = OpenSearchConnectionError("N/A", str(reason), reason)
    one = load_settings({"OS_HOST": "os-1", "OS_PORT": "9200"})
    assert explain(one, error).startswith("OpenSearch at os-1:9200: no answer: ")
    several = load_settings({"OS_HOSTS": "os-1:9200,os-2:9201"})
    assert explain(several, error) == (
        "OpenSearch at one of os-1:9200, os-2:9201: no answer: Cannot connect to host os-2:9201"
    )
    refused = TransportError(401, "security_exception", {})
    assert explain(several, refused).startswith("OpenSearch at one of os-1:9200, os-2:9201 refused")
