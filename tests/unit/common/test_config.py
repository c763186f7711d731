"""common/config.py: every variable parses, every bad value names its variable, exit 2."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from searchsync.common.config import (
    EXIT_CONFIG,
    SECRET_VARIABLES,
    ConfigError,
    Settings,
    load_settings,
    settings_or_exit,
)

A_FILE = __file__  # PEM settings are checked for a readable file, nothing more
FIELDS = {f.encode_name: f for f in msgspec.structs.fields(Settings)}

# variable -> (a good raw value, its parsed value, a bad raw value)
CASES: dict[str, tuple[str, object, str | None]] = {
    "MZ_HOST": ("mz.internal", "mz.internal", None),
    "MZ_PORT": ("16875", 16875, "70000"),
    "MZ_USER": ("alice", "alice", None),
    "MZ_PASSWORD": ("s3cret", "s3cret", None),
    "MZ_DATABASE": ("db", "db", None),
    "MZ_CLUSTER": ("compute", "compute", "bad cluster"),
    "OS_HOST": ("os.internal", "os.internal", None),
    "OS_PORT": ("9201", 9201, "port"),
    "OS_HOSTS": ("os-1:9200,os-2:9200", "os-1:9200,os-2:9200", "http://os-1:9200"),
    "OS_INDEX_NAME": ("orders_x", "orders_x", "Orders"),
    "OS_USER": ("admin", "admin", None),
    "OS_PASSWORD": ("pw", "pw", "pw"),  # bad alone: OS_USER is empty
    "OS_USE_SSL": ("yes", True, "maybe"),
    "OS_TIMEOUT_SECONDS": ("2.5", 2.5, "0"),
    "OS_REFRESH_INTERVAL": ("200ms", "200ms", "0.2"),
    "OS_INDEX_REPLICAS": ("2", "2", "one"),
    "MZ_SSLMODE": ("require", "require", "on"),
    "MZ_SSLROOTCERT": (A_FILE, A_FILE, "/no/such/ca.pem"),
    "OS_VERIFY_CERTS": ("false", False, "maybe"),
    "OS_CA_CERTS": (A_FILE, A_FILE, "/no/such/ca.pem"),
    "OS_CLIENT_CERT": (A_FILE, A_FILE, "/no/such/cert.pem"),
    "OS_CLIENT_KEY": (A_FILE, A_FILE, "/no/such/key.pem"),
    "OS_AUTH": ("basic", "basic", "kerberos"),
    "OS_AWS_REGION": ("eu-west-1", "eu-west-1", "Europe"),
    "OS_AWS_SERVICE": ("aoss", "aoss", "s3"),
    "REDIS_CA_CERTS": (A_FILE, A_FILE, "/no/such/ca.pem"),
    "VIEW_NAME": ("my_view", "my_view", "my-view"),
    "KEY_COLUMN": ("id", "id", "1id"),
    "INDEX_MAPPING": ("/etc/m.json", "/etc/m.json", None),  # checked by common.views
    "USE_SUBSCRIBE": ("false", False, "nope"),
    "DISCARD_SNAPSHOT": ("true", True, "2"),
    "SUBSCRIBE_ENVELOPE": ("upsert", "upsert", "debezium"),
    "POLL_INTERVAL": ("0.5", 0.5, "-1"),
    "PROGRESS_INTERVAL_MS": ("250", 250, "0"),
    "MAX_BATCH_SIZE": ("500", 500, "0"),
    "MAX_BATCH_AGE_SECONDS": ("2", 2.0, "soon"),
    "MAX_DOCUMENT_BYTES": ("5242880", 5242880, "10"),
    "MAX_ENTRY_BYTES": ("65536", 65536, "0"),
    "MAX_BULK_BYTES": ("1048576", 1048576, "big"),
    "BACKPRESSURE_THRESHOLD": ("6000", 6000, "-5"),
    "BACKPRESSURE_RESUME": ("100", 100, "1.5"),
    "BUFFER_LOG_SECONDS": ("30", 30.0, "0"),
    "RETRY_INITIAL_BACKOFF": ("0.5", 0.5, "0"),
    "RETRY_MAX_BACKOFF": ("60", 60.0, "x"),
    "RETRY_BACKOFF_MULTIPLIER": ("1.5", 1.5, "0.5"),
    "REDIS_URL": ("redis://r:6380/1", "redis://r:6380/1", None),
    "STREAM_PARTITIONS": ("16", 16, "0"),
    "STREAM_RETENTION_SECONDS": ("3600", 3600, "0"),
    "DLQ_RETENTION_SECONDS": ("60", 60, "0"),
    "CONSUMER_GROUP": ("g2", "g2", None),
    "CONSUMER_NAME": ("c-1", "c-1", None),
    "PRODUCER_NAME": ("p-1", "p-1", None),
    "LEASE_TTL_SECONDS": ("2", 2.0, "0"),
    "MAX_DELIVERIES": ("3", 3, "0"),
    "METRICS_PORT": ("9400", 9400, "65536"),
    "METRICS_HOST": ("::", "::", "0.0.0.0:9400"),
    "LOG_LEVEL": ("debug", "DEBUG", "TRACE"),
    "LOG_FORMAT": ("text", "text", "xml"),
    "REDIS_CLUSTER": ("true", "true", "yes"),
    "REDIS_WAIT_REPLICAS": ("1", 1, "17"),
    "REDIS_WAIT_TIMEOUT_MS": ("250", 250, "0"),
}

# the runbook's §5 variables plus those README "Configuration" adds: all must be in Settings
RUNBOOK = {
    "MZ_HOST", "MZ_PORT", "MZ_USER", "MZ_PASSWORD", "MZ_DATABASE", "OS_HOST", "OS_PORT",
    "OS_INDEX_NAME", "USE_SUBSCRIBE", "DISCARD_SNAPSHOT", "MAX_BATCH_SIZE",
    "MAX_BATCH_AGE_SECONDS", "BACKPRESSURE_THRESHOLD", "BACKPRESSURE_RESUME",
    "RETRY_INITIAL_BACKOFF", "RETRY_MAX_BACKOFF", "RETRY_BACKOFF_MULTIPLIER", "LOG_LEVEL",
    "LOG_FORMAT", "POLL_INTERVAL", "REDIS_URL", "STREAM_PARTITIONS", "CONSUMER_GROUP",
    "CONSUMER_NAME", "VIEW_NAME", "KEY_COLUMN", "MZ_CLUSTER", "METRICS_PORT", "MAX_DELIVERIES",
}  # fmt: skip


def test_every_documented_variable_is_a_setting() -> None:
    assert set(FIELDS) >= RUNBOOK


def test_every_setting_has_a_case() -> None:
    assert set(FIELDS) == set(CASES)


def test_defaults_match_the_runbook() -> None:
    s = load_settings({})
    assert (s.mz_host, s.mz_port, s.mz_user, s.mz_database) == (
        "mz",
        6875,
        "materialize",
        "materialize",
    )
    assert (s.os_host, s.os_port, s.os_index_name) == ("opensearch", 9200, "orders")
    assert (s.max_batch_size, s.max_batch_age_seconds) == (1000, 5.0)
    assert (s.backpressure_threshold, s.backpressure_resume) == (5000, 2500)
    assert (s.retry_initial_backoff, s.retry_max_backoff, s.retry_backoff_multiplier) == (
        1.0,
        30.0,
        2.0,
    )
    assert (s.log_level, s.log_format, s.use_subscribe, s.mz_cluster) == (
        "INFO",
        "json",
        True,
        "serving",
    )
    # deliberate deviation: the runbook's DISCARD_SNAPSHOT=true loses changes made while down
    assert s.discard_snapshot is False


@pytest.mark.parametrize("variable", sorted(CASES))
def test_good_value_parses(variable: str) -> None:
    raw, parsed, _ = CASES[variable]
    env = {variable: raw}
    if variable == "BACKPRESSURE_THRESHOLD":
        env["BACKPRESSURE_RESUME"] = "10"
    if variable == "OS_PASSWORD":
        env["OS_USER"] = "admin"
    if variable in ("OS_CA_CERTS", "OS_CLIENT_CERT", "OS_CLIENT_KEY"):
        env |= {"OS_USE_SSL": "true", "OS_CLIENT_CERT": A_FILE, "OS_CLIENT_KEY": A_FILE}
    if variable == "REDIS_CA_CERTS":
        env["REDIS_URL"] = "rediss://redis:6380/0"
    settings = load_settings(env)
    assert getattr(settings, FIELDS[variable].name) == parsed


# plain strings (hosts, users, passwords, URLs, names) take any non-empty value, and an
# empty one means "unset": they have no bad value to test
@pytest.mark.parametrize("variable", sorted(v for v, c in CASES.items() if c[2] is not None))
def test_bad_value_names_the_variable(variable: str) -> None:
    bad = CASES[variable][2]
    assert bad is not None
    with pytest.raises(ConfigError) as info:
        load_settings({variable: bad})
    message = str(info.value)
    assert info.value.variable == variable
    assert message.startswith(f"invalid {variable}=")
    assert "expected" in message
    if variable in SECRET_VARIABLES:
        assert bad not in message.split("expected", maxsplit=1)[0].removeprefix(
            f"invalid {variable}="
        )


def test_resume_must_stay_below_threshold() -> None:
    with pytest.raises(ConfigError, match="BACKPRESSURE_RESUME"):
        load_settings({"BACKPRESSURE_THRESHOLD": "100", "BACKPRESSURE_RESUME": "100"})


def test_initial_backoff_not_above_max() -> None:
    with pytest.raises(ConfigError, match="RETRY_INITIAL_BACKOFF"):
        load_settings({"RETRY_INITIAL_BACKOFF": "40"})


def test_secret_values_never_echoed() -> None:
    assert {"MZ_PASSWORD", "OS_PASSWORD", "REDIS_URL"} <= SECRET_VARIABLES
    assert "hunter2" not in str(ConfigError("MZ_PASSWORD", "hunter2", "something"))
    redacted = load_settings(
        {"MZ_PASSWORD": "hunter2", "OS_USER": "u", "OS_PASSWORD": "pw2"}
    ).redacted()
    assert "hunter2" not in str(redacted) and "pw2" not in str(redacted)


def test_exit_status_2_names_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        settings_or_exit({"MAX_BATCH_SIZE": "lots"})
    assert info.value.code == EXIT_CONFIG == 2
    assert "MAX_BATCH_SIZE='lots'" in capsys.readouterr().err


def test_exit_status_2_from_a_real_process() -> None:
    code = "from common.config import settings_or_exit; settings_or_exit()"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"STREAM_PARTITIONS": "zero", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "STREAM_PARTITIONS" in proc.stderr


def test_consumer_identity_defaults_to_host_and_pid() -> None:
    assert load_settings({"CONSUMER_NAME": "c7"}).consumer_identity() == "c7"
    assert load_settings({}).consumer_identity().endswith(f"-{__import__('os').getpid()}")
