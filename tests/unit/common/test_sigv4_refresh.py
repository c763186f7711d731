"""OS_AUTH=sigv4: a credential refresh that fails is a connection error, not a bug.

No service: botocore's own credential chain, fed by a ``credential_process`` (AWS's
documented hook for external credential sources) that answers once with credentials
expiring in five minutes and fails afterwards, as an instance metadata service or STS
that went away would. botocore must refresh credentials that expire within ten
minutes before signing, so the second request's signature needs the failed refresh.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from opensearchpy import ConnectionError as OpenSearchConnectionError

from searchsync.common.config import load_settings
from searchsync.common.errors import Failure, classify
from searchsync.common.opensearch import _auth


def test_a_failed_refresh_is_retried_like_a_dropped_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = {"Version": 1, "AccessKeyId": "AKIAREFRESH", "SecretAccessKey": "s3cret",
              "SessionToken": "token", "Expiration": expires}  # fmt: skip
    served = tmp_path / "served"
    process = tmp_path / "credentials.sh"
    process.write_text(
        "#!/bin/sh\n"
        f'[ -e "{served}" ] && {{ echo "metadata service away" >&2; exit 1; }}\n'
        f'touch "{served}"\n'
        f"echo '{json.dumps(answer)}'\n"
    )
    process.chmod(0o755)
    config = tmp_path / "config"
    config.write_text(f"[profile refresh]\ncredential_process = {process}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "refresh")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = load_settings(
        {"OS_AUTH": "sigv4", "OS_USE_SSL": "true", "OS_AWS_REGION": "eu-west-1"}
    )
    signer = _auth(settings)  # the first answer: the credentials load
    assert served.exists()
    with pytest.raises(OpenSearchConnectionError) as caught:
        signer("POST", "https://127.0.0.1:9200/_bulk")
    assert "AWS credentials could not be refreshed" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert classify(caught.value) is Failure.TRANSIENT
