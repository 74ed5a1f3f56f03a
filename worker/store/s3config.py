"""`S3Config`: validated settings of an `S3Store`, and their URL form.

URL form: `s3://<bucket>[/<prefix>]?endpoint=host:port&secure=false&region=us-east-1`
with optional `access_key`, `secret_key`, `session_token`, `part_size`, `parallel`,
`attempts`, `create_bucket`, `cert_check`, `ca_file`, `connect_timeout`, `read_timeout`.
Missing credentials come from the environment: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
(/ `AWS_SESSION_TOKEN`), else `MINIO_ROOT_USER` / `MINIO_ROOT_PASSWORD`. A missing endpoint comes
from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS (`s3.amazonaws.com`, TLS).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit

from .retry import RetryPolicy

__all__ = ["S3Config", "parse_s3_url"]

MIB = 1 << 20
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def check_bucket_name(bucket: str) -> str:
    """Return `bucket` if it follows the S3 naming rules, else raise ValueError naming it."""
    if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket):
        raise ValueError(
            f"S3Config.bucket: invalid bucket name {bucket!r} (3-63 characters: lowercase letters, "
            "digits, '.' and '-', starting and ending with a letter or digit)"
        )
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        raise ValueError(f"S3Config.bucket: invalid bucket name {bucket!r} (adjacent '.'/'-' characters)")
    try:
        ipaddress.ip_address(bucket)
    except ValueError:
        return bucket
    raise ValueError(f"S3Config.bucket: invalid bucket name {bucket!r} (looks like an IP address)")


@dataclass(frozen=True)
class S3Config:
    """Settings of one `S3Store` (bucket + key prefix on one endpoint)."""

    bucket: str
    endpoint: str = "s3.amazonaws.com"
    prefix: str = ""
    secure: bool = True
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    part_size: int = 8 * MIB
    parallel: int = 10
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    create_bucket: bool = True
    cert_check: bool = True
    ca_file: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 120.0

    def __post_init__(self) -> None:
        check_bucket_name(self.bucket)
        if not isinstance(self.endpoint, str) or not _ENDPOINT_RE.match(self.endpoint):
            raise ValueError(f"S3Config.endpoint must be host[:port] without a scheme, got {self.endpoint!r}")
        prefix = self.prefix.strip("/")
        if prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
            raise ValueError(f"S3Config.prefix has an empty, '.' or '..' segment: {self.prefix!r}")
        object.__setattr__(self, "prefix", prefix + "/" if prefix else "")
        if not 5 * MIB <= self.part_size <= 5 * 1024 * MIB:
            raise ValueError(f"S3Config.part_size must be in [5 MiB, 5 GiB] bytes, got {self.part_size!r}")
        if not isinstance(self.parallel, int) or not 1 <= self.parallel <= 64:
            raise ValueError(f"S3Config.parallel must be an int in [1, 64], got {self.parallel!r}")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("S3Config.access_key and S3Config.secret_key must be given together")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"S3Config.{name} must be > 0 seconds, got {value!r}")
        if not isinstance(self.retry, RetryPolicy):
            raise ValueError(f"S3Config.retry must be a RetryPolicy, got {self.retry!r}")

    @property
    def url(self) -> str:
        """The store's URL, without credentials."""
        q = [f"endpoint={self.endpoint}", f"secure={str(self.secure).lower()}"]
        if self.region:
            q.append(f"region={quote(self.region)}")
        return f"s3://{self.bucket}/{self.prefix}?" + "&".join(q)

    def with_(self, **changes: object) -> S3Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(name: str, value: str) -> bool:
    try:
        return _BOOL[value.lower()]
    except KeyError:
        raise ValueError(f"S3 URL parameter {name}={value!r} is not a boolean (true/false)") from None


def _endpoint_from_env(env: Mapping[str, str]) -> tuple[str, bool] | None:
    raw = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not raw:
        return None
    parts = urlsplit(raw if "://" in raw else f"https://{raw}")
    return parts.netloc, parts.scheme != "http"


def parse_s3_url(url: str, env: Mapping[str, str] | None = None, **overrides: object) -> S3Config:
    """Build an `S3Config` from an `s3://bucket/prefix?...` URL (see module docstring)."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"not an s3:// URL: {url!r}")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    known = {"endpoint", "secure", "region", "access_key", "secret_key", "session_token", "part_size",
             "parallel", "attempts", "create_bucket", "cert_check", "ca_file", "connect_timeout",
             "read_timeout"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown S3 URL parameter(s) {unknown} in {url.split('?')[0]!r}")
    kw: dict[str, object] = {"bucket": parts.netloc, "prefix": parts.path.strip("/")}
    if "endpoint" in params:
        ep = params["endpoint"]
        if "://" in ep:
            sp = urlsplit(ep)
            kw["endpoint"], kw["secure"] = sp.netloc, sp.scheme == "https"
        else:
            kw["endpoint"] = ep
    elif (from_env := _endpoint_from_env(env)) is not None:
        kw["endpoint"], kw["secure"] = from_env
    if "secure" in params:
        kw["secure"] = _bool("secure", params["secure"])
    kw["region"] = params.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    if "access_key" in params or "secret_key" in params:
        kw["access_key"], kw["secret_key"] = params.get("access_key"), params.get("secret_key")
        kw["session_token"] = params.get("session_token")
    elif env.get("AWS_ACCESS_KEY_ID"):
        kw["access_key"], kw["secret_key"] = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        kw["session_token"] = env.get("AWS_SESSION_TOKEN") or None
    elif env.get("MINIO_ROOT_USER"):
        kw["access_key"], kw["secret_key"] = env.get("MINIO_ROOT_USER"), env.get("MINIO_ROOT_PASSWORD")
    for name, conv in (("part_size", int), ("parallel", int), ("connect_timeout", float),
                       ("read_timeout", float)):
        if name in params:
            try:
                kw[name] = conv(params[name])
            except ValueError:
                raise ValueError(f"S3 URL parameter {name}={params[name]!r} is not a number") from None
    if "attempts" in params:
        try:
            kw["retry"] = RetryPolicy(attempts=int(params["attempts"]))
        except ValueError as exc:
            raise ValueError(f"S3 URL parameter attempts={params['attempts']!r}: {exc}") from None
    for name in ("create_bucket", "cert_check"):
        if name in params:
            kw[name] = _bool(name, params[name])
    if "ca_file" in params:
        kw["ca_file"] = params["ca_file"]
    kw.update(overrides)
    return S3Config(**kw)  # type: ignore[arg-type]
