"""An HTTPS proxy that checks the AWS Signature Version 4 of every request, like Amazon
OpenSearch Service, in front of the devstack's plain-HTTP OpenSearch node.

Amazon's endpoint cannot run here; what searchsync has to get right is the signature
(opensearch-py's ``AWSV4SignerAsyncAuth`` over botocore, OS_AUTH=sigv4). For each
request :func:`check` recomputes the signature with botocore's own ``SigV4Auth`` from
the credentials the proxy knows (access key → secret key), its region and service, the
request's method, path, query, body and the headers its ``SignedHeaders`` names, at the
request's ``x-amz-date``, and compares it with the one in ``Authorization``. It also
checks what the signature alone would not: the credential scope (date, region,
service), that ``host`` and ``x-amz-date`` are signed, that ``x-amz-content-sha256``,
when sent (signed or not), is the body's SHA-256, and that the date is within 5 minutes
(AWS's window).
A valid request is forwarded; any other gets 403 and the JSON body AWS answers with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from botocore.auth import SigV4Auth  # type: ignore[import-untyped,unused-ignore]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped,unused-ignore]
from botocore.credentials import Credentials  # type: ignore[import-untyped,unused-ignore]

from tests.support.http_proxy import Action, HttpProxy, RequestHead
from tests.support.tls import Authority, server_context

__all__ = ["MISMATCH", "SigV4Proxy", "check"]

MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query, as on the request line
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def parse(head: RequestHead, body: bytes) -> Request:
    """The request line and headers of ``head`` (names lower-cased), with ``body``."""
    lines = head.raw.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(method.upper(), target, headers, body)


def check(
    request: Request,
    secrets: Mapping[str, str],
    region: str,
    service: str,
    now: dt.datetime,
) -> str | None:
    """None when ``request`` carries a valid SigV4 signature by one of ``secrets``
    (access key → secret key) for ``region``/``service``; else the reason (AWS's words
    where AWS has some)."""
    match = _AUTHORIZATION.match(request.headers.get("authorization", ""))
    if match is None:
        return "Authorization header requires a AWS4-HMAC-SHA256 signature"
    secret = secrets.get(match["key"])
    if secret is None:
        return "The security token included in the request is invalid."
    if (match["region"], match["service"]) != (region, service):
        return f"Credential should be scoped to a valid region and service ({region}/{service})"
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    if any(name not in request.headers for name in signed):
        return "a signed header is missing"
    amz_date = request.headers["x-amz-date"]
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return f"x-amz-date {amz_date!r} is not ISO 8601 basic format"
    if abs(now - when) > _SKEW or match["date"] != amz_date[:8]:
        return "Signature expired or not yet current (x-amz-date, credential scope date)"
    content_hash = request.headers.get("x-amz-content-sha256")
    # Sent unsigned by opensearch-py 2.6 (added after signing; 3.x signs it): accepted,
    # as the body is then covered by the signature's own payload hash; it must match.
    if content_hash is not None and content_hash != hashlib.sha256(request.body).hexdigest():
        return "The provided 'x-amz-content-sha256' header does not match what was computed."
    aws = AWSRequest(
        method=request.method,
        url=f"https://{request.headers['host']}{_canonical_target(request.target)}",
        data=request.body,
        headers={name: request.headers[name] for name in signed},
    )
    aws.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(match["key"], secret), service, region)
    expected = auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)
    if not hmac.compare_digest(expected, match["signature"]):
        return MISMATCH
    return None


def _canonical_target(target: str) -> str:
    """The target with its query in AWS's canonical encoding, as the service rebuilds
    it: each name and value percent-decoded, then encoded except ``A-Za-z0-9-_.~``.
    (botocore's signer takes the query as given, already encoded so; a client library
    may send it re-quoted, e.g. ``:`` for ``%3A``, which AWS accepts.)"""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    pairs = [pair.partition("=") for pair in query.split("&") if pair]
    return (
        path
        + "?"
        + "&".join(
            f"{quote(unquote(name), safe='-_.~')}={quote(unquote(value), safe='-_.~')}"
            for name, _, value in pairs
        )
    )


class SigV4Proxy(HttpProxy):
    """HTTPS (a certificate of ``authority``) that forwards only requests :func:`check`
    accepts to the plain-HTTP node; :attr:`verified` and :attr:`rejected` count them,
    :attr:`reasons` keeps why each rejected one was."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        authority: Authority,
        secrets: Mapping[str, str],
        *,
        region: str,
        service: str = "es",
    ) -> None:
        super().__init__(target_host, target_port, tls=server_context(authority.issue("aws")))
        self.secrets = dict(secrets)
        self.region = region
        self.service = service
        self.verified = 0
        self.rejected = 0
        self.reasons: list[str] = []
        self._lock = threading.Lock()

    def action_with_body(self, request: RequestHead, body: bytes) -> tuple[Action, bytes]:
        reason = check(
            parse(request, body), self.secrets, self.region, self.service, dt.datetime.now(dt.UTC)
        )
        with self._lock:
            if reason is None:
                self.verified += 1
                return "forward", b""
            self.rejected += 1
            self.reasons.append(f"{reason}: {request.start_line}")  # which request, too
        return "forbidden", json.dumps({"message": reason}).encode()
