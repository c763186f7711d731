"""Every bad setting gets exit 2, the variable's name and the values it accepts.

Table-driven, as a new user would meet them: for every variable of the settings
object, bad values of each kind it can get wrong (wrong type, out of range, wrong
scheme, a contradictory pair), each checked for exit status 2, the variable's
name, the accepted values in words, and no secret in the message. A few go
through the real entry points as processes (a URL with the wrong scheme used to
end in a traceback and exit 1).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from searchsync.common.config import EXIT_CONFIG, SECRET_VARIABLES, Settings, settings_or_exit

ROOT = Path(__file__).resolve().parents[3]
VARIABLES = {f.encode_name for f in msgspec.structs.fields(Settings)}

# Variables that take any text: an empty value means "unset", so nothing is bad.
# (INDEX_MAPPING: common.views reads and checks it, tests/unit/common/test_views.py)
FREE_TEXT = {"MZ_PASSWORD", "OS_USER", "CONSUMER_NAME", "PRODUCER_NAME", "MZ_USER",
             "MZ_DATABASE", "CONSUMER_GROUP", "INDEX_MAPPING"}  # fmt: skip

PORT = "a port number from 1 to 65535"
POSITIVE = "a number above 0"
WHOLE = "a whole number of at least 1"
BOOLEAN = "true/false, 1/0, yes/no or on/off"
BYTES = "a size in bytes from 1024 to 536870912"
IDENTIFIER = "an SQL identifier"
HOST = "a host name or IP address (no scheme, no port, no path)"
REDIS = "redis://[user:password@]host[:port][/db]"
BIND = "an IP address or host name to listen on, e.g. 127.0.0.1, 0.0.0.0 or ::"

# variable -> [(bad value, extra environment, text the message must hold)]
A_FILE = __file__  # PEM settings are checked for a readable file, nothing more
NO_FILE = "the path of a readable PEM file (no such file)"
SSL = {"OS_USE_SSL": "true"}

BAD: dict[str, list[tuple[str, dict[str, str], str]]] = {
    "MZ_HOST": [("postgres://mz:6875", {}, HOST), ("mz host", {}, HOST)],
    "MZ_PORT": [("70000", {}, PORT), ("0", {}, PORT), ("sixty", {}, PORT)],
    "MZ_CLUSTER": [("bad cluster", {}, IDENTIFIER), ("1st", {}, IDENTIFIER)],
    "OS_HOST": [("http://opensearch:9200", {}, HOST)],
    "OS_PORT": [("port", {}, PORT), ("-1", {}, PORT)],
    "OS_HOSTS": [("os-1", {}, "host:port pairs separated by commas"), ("os:1,os:1", {}, "twice")],
    "OS_INDEX_NAME": [("Orders", {}, "a lowercase index name"), ("_x", {}, "lowercase")],
    "OS_PASSWORD": [("pw-secret", {}, "to be set together with OS_USER")],
    "OS_USE_SSL": [("maybe", {}, BOOLEAN)],
    "OS_TIMEOUT_SECONDS": [("0", {}, POSITIVE), ("soon", {}, POSITIVE)],
    "OS_REFRESH_INTERVAL": [
        ("1", {}, "an OpenSearch time value such as 200ms, 1s or 30s"),
        ("-1", {}, "an OpenSearch time value"),  # never refreshing: nothing searchable
    ],
    "OS_INDEX_REPLICAS": [
        ("one", {}, "auto (1 on a cluster of several data nodes, 0 on one) or a whole number"),
        ("-1", {}, "a whole number of replicas from 0 to 99"),
        ("100", {}, "a whole number of replicas from 0 to 99"),
    ],
    "MZ_SSLMODE": [("on", {}, "one of disable, allow, prefer, require, verify-ca, verify-full")],
    "MZ_SSLROOTCERT": [
        ("/no/such/ca.pem", {}, NO_FILE),
        (A_FILE, {"MZ_SSLMODE": "disable"}, "to be empty with MZ_SSLMODE=disable"),
    ],
    "OS_VERIFY_CERTS": [
        ("maybe", {}, BOOLEAN),
        ("false", {**SSL, "OS_CA_CERTS": A_FILE}, "true when OS_CA_CERTS is set"),
    ],
    "OS_CA_CERTS": [("/no/such", SSL, NO_FILE), (A_FILE, {}, "with OS_USE_SSL=true")],
    "OS_CLIENT_CERT": [
        (A_FILE, SSL, "to be set together with OS_CLIENT_KEY"),
        ("/no/such", SSL, NO_FILE),
    ],
    "OS_CLIENT_KEY": [(A_FILE, SSL, "to be set together with OS_CLIENT_CERT")],
    "OS_AUTH": [("kerberos", {}, "one of basic, sigv4")],
    "OS_AWS_REGION": [("Europe", {}, "an AWS region such as eu-west-1")],
    "OS_AWS_SERVICE": [("s3", {}, "one of es, aoss")],
    "REDIS_CA_CERTS": [
        (A_FILE, {}, "to be used with a rediss:// REDIS_URL"),
        ("/no/such", {"REDIS_URL": "rediss://redis:6380/0"}, NO_FILE),
    ],
    "VIEW_NAME": [("my-view", {}, IDENTIFIER), ("x" * 64, {}, "at most 63 characters")],
    "KEY_COLUMN": [("1id", {}, IDENTIFIER)],
    "USE_SUBSCRIBE": [("nope", {}, BOOLEAN)],
    "DISCARD_SNAPSHOT": [("2", {}, BOOLEAN)],
    "SUBSCRIBE_ENVELOPE": [("debezium", {}, "one of diffs, upsert")],
    "POLL_INTERVAL": [("-1", {}, POSITIVE), ("5s", {}, POSITIVE)],
    "PROGRESS_INTERVAL_MS": [("0", {}, WHOLE), ("1.5", {}, WHOLE)],
    "MAX_BATCH_SIZE": [("0", {}, WHOLE), ("lots", {}, WHOLE)],
    "MAX_BATCH_AGE_SECONDS": [("soon", {}, POSITIVE)],
    "MAX_DOCUMENT_BYTES": [("10", {}, BYTES), ("1GB", {}, BYTES)],
    "MAX_ENTRY_BYTES": [("0", {}, BYTES)],
    "MAX_BULK_BYTES": [("999999999999", {}, BYTES)],
    "BACKPRESSURE_THRESHOLD": [("-5", {}, WHOLE)],
    "BACKPRESSURE_RESUME": [
        ("1.5", {}, "a whole number of at least 0"),
        ("5000", {"BACKPRESSURE_THRESHOLD": "5000"}, "below BACKPRESSURE_THRESHOLD (5000)"),
    ],
    "BUFFER_LOG_SECONDS": [("0", {}, POSITIVE)],
    "RETRY_INITIAL_BACKOFF": [
        ("0", {}, POSITIVE),
        ("40", {"RETRY_MAX_BACKOFF": "30"}, "at most RETRY_MAX_BACKOFF (30.0)"),
    ],
    "RETRY_MAX_BACKOFF": [("x", {}, POSITIVE)],
    "RETRY_BACKOFF_MULTIPLIER": [("0.5", {}, "a number of at least 1")],
    "REDIS_URL": [
        ("http://x", {}, REDIS),
        ("redis://user:hunter2@host:notaport/0", {}, REDIS),
        ("redis://user:hunter2@host:6379/zero", {}, REDIS),
        ("localhost:6379", {}, REDIS),
        ("unix://", {}, REDIS),
    ],
    "STREAM_PARTITIONS": [("0", {}, "a whole number from 1 to 1024"), ("2000", {}, "1 to 1024")],
    "STREAM_RETENTION_SECONDS": [("0", {}, WHOLE), ("1d", {}, WHOLE)],
    "DLQ_RETENTION_SECONDS": [("-1", {}, WHOLE)],
    "LEASE_TTL_SECONDS": [("0", {}, POSITIVE)],
    "MAX_DELIVERIES": [("0", {}, WHOLE)],
    "METRICS_PORT": [("65536", {}, "a port number from 1 to 65535, or 0 for none")],
    "METRICS_HOST": [
        ("http://0.0.0.0", {}, BIND),
        ("0.0.0.0:9400", {}, BIND),
        ("my host", {}, BIND),
        ("-x.example", {}, BIND),
        ("1:2:3", {}, BIND),
    ],
    "LOG_LEVEL": [("TRACE", {}, "one of DEBUG, INFO, WARNING, ERROR")],
    "LOG_FORMAT": [("xml", {}, "one of json, text")],
    "REDIS_CLUSTER": [("yes", {}, "one of auto, true, false")],
    "REDIS_WAIT_REPLICAS": [("-1", {}, "a whole number from 0 to 16"), ("two", {}, "0 to 16")],
    "REDIS_WAIT_TIMEOUT_MS": [("0", {}, "milliseconds from 1 to 5000"), ("9000", {}, "1 to 5000")],
}


def test_every_variable_is_in_the_table() -> None:
    assert set(BAD) == VARIABLES - FREE_TEXT, "give every new variable its bad values"


def _cases() -> list[tuple[str, str, dict[str, str], str]]:
    return [(v, bad, extra, text) for v, rows in sorted(BAD.items()) for bad, extra, text in rows]


@pytest.mark.parametrize(("variable", "bad", "extra", "accepted"), _cases())
def test_bad_value_exits_2_naming_variable_and_accepted_values(
    variable: str,
    bad: str,
    extra: dict[str, str],
    accepted: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        settings_or_exit({**extra, variable: bad})
    message = capsys.readouterr().err
    assert info.value.code == EXIT_CONFIG == 2
    assert message.startswith(f"searchsync: configuration error: invalid {variable}=")
    assert accepted in message
    assert message.count("\n") == 1, "one line, no traceback"
    if variable in SECRET_VARIABLES:
        assert f"={bad}" not in message and f"{bad!r}" not in message
        assert "hunter2" not in message and "pw-secret" not in message


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("searchsync.producer.main", []),
        ("searchsync.consumer.main", []),
        ("searchsync", ["status"]),
    ],
)
def test_entry_points_exit_2_on_a_redis_url_with_the_wrong_scheme(
    module: str, args: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={"REDIS_URL": "http://user:hunter2@x", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "REDIS_URL" in proc.stderr and REDIS in proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr
