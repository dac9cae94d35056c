"""What the operator may read and where it may send it: the guard against a confused deputy.

Whoever may create a CanaryRollout chooses its addresses (`spec.metrics.prometheus.address`,
`spec.paging.pagerDuty.url`) and names Secrets (`headersSecretRef`, `routingKeySecretRef`).
The operator can read Secrets that person cannot, and sends their values to those addresses.
Two rules keep it from doing that on anyone's behalf:

- it sends requests only to addresses its installer allowed (an `Allowlist` per kind of
  server, from `--allow-prometheus` and `--allow-pagerduty`);
- it reads a Secret only when the Secret itself says so: the annotation
  `canaryguard.io/allowed-rollouts` lists the rollout's name (or `*`). Whoever can write that
  annotation can write the Secret, which the tenant who only creates rollouts cannot.

Addresses are parsed by one strict grammar that leaves no room for the tricks that make two
URL parsers disagree about the host (userinfo, backslashes, percent-encoded hosts, dot
segments), so the host matched here is the host the HTTP client connects to. Matching is on
scheme, host, port and whole path segments, never on string prefixes:
`http://prom:9090.evil`, `http://prom:9090@evil` and `http://prom:90901` are not
`http://prom:9090`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

SECRET_OPT_IN: Final = "canaryguard.io/allowed-rollouts"  # noqa: S105 - a name, not a secret
"""The Secret annotation that makes it readable by rollouts: names, comma-separated, or `*`."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_URL: Final = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?P<rest>.*)",
    re.DOTALL,
)
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_AUTHORITY: Final = re.compile(
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?"
)
# RFC 3986 path characters: unreserved, sub-delims, ':', '@', '/', and %XX escapes.
_PATH: Final = re.compile(r"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*")
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


class AddressError(ValueError):
    """An address that is not a plain http(s) URL; the message never repeats the address.
    `credentials`: it looks like the address was made to carry a credential (userinfo, a
    query string), which belongs in a Secret."""

    def __init__(self, problem: str, *, credentials: bool = False) -> None:
        super().__init__(problem)
        self.credentials = credentials


@dataclass(frozen=True)
class Address:
    """A parsed http(s) address: lower-case scheme and host, the port (the scheme's default
    when none is written) and the path (`""` for none, no trailing slash)."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    def within(self, prefix: Address) -> bool:
        """Same scheme, host and port as `prefix`, and its path starts with every segment of
        the prefix's path."""
        return (self.scheme, self.host, self.port) == (
            prefix.scheme,
            prefix.host,
            prefix.port,
        ) and self.segments[: len(prefix.segments)] == prefix.segments

    def __str__(self) -> str:
        port = "" if _DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.path}"


def parse_address(text: str) -> Address:
    """An http(s) URL without credentials, query or fragment, strictly parsed; else
    AddressError saying what is wrong (without repeating the text, which may hold a
    password)."""
    match = _URL.fullmatch(text)
    if match is None:
        raise AddressError("must be an http(s) URL (http://host[:port][/path])")
    scheme = match["scheme"].lower()
    if scheme not in _DEFAULT_PORTS:
        raise AddressError("must be an http(s) URL (http://host[:port][/path])")
    if "@" in match["authority"]:
        raise AddressError("must not hold credentials (user:password@host)", credentials=True)
    authority = _AUTHORITY.fullmatch(match["authority"])
    if authority is None:
        raise AddressError("the host must be a DNS name or an IP address, with an optional :port")
    port = int(authority["port"]) if authority["port"] else _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise AddressError("the port must be between 1 and 65535")
    if match["rest"]:
        raise AddressError("must not have a query (?...) or fragment (#...)", credentials=True)
    path = match["path"]
    if not _PATH.fullmatch(path):
        raise AddressError("the path may hold only URL path characters (no spaces or '\\')")
    if any(s.lower().replace("%2e", ".") in (".", "..") for s in path.split("/")):
        raise AddressError("the path must not have '.' or '..' segments")
    return Address(scheme, authority["host"].lower(), port, path.rstrip("/"))


def strip_credentials(url: str) -> str:
    """`url` without a `user:password@` part, for links and log lines (the spec parser
    refuses credentials in addresses; this is for whatever got past it)."""
    return _USERINFO.sub(r"\1", url)


@dataclass(frozen=True)
class Allowlist:
    """The addresses one kind of server may have, as the installer set them with `flag`:
    an address is allowed when it is within one of the entries."""

    entries: tuple[Address, ...]
    flag: str

    def allows(self, address: Address) -> bool:
        return any(address.within(entry) for entry in self.entries)

    def __str__(self) -> str:
        return ", ".join(str(e) for e in self.entries) or "none"


class AddressNotAllowed(ValueError):
    """A spec address the operator's installer did not allow; `path` names the field."""

    def __init__(self, path: str, address: Address, allowlist: Allowlist) -> None:
        super().__init__(
            f"{path}: {address} is not an address this operator may send requests to "
            f"(allowed: {allowlist}); the operator's installer allows addresses with "
            f"{allowlist.flag}"
        )
        self.path = path


def check_address(path: str, url: str, allowlist: Allowlist) -> Address:
    """The parsed `url` of the field `path` when `allowlist` allows it, else
    AddressNotAllowed (AddressError when it does not parse)."""
    address = parse_address(url)
    if not allowlist.allows(address):
        raise AddressNotAllowed(path, address, allowlist)
    return address


def secret_allows(annotations: Mapping[str, str] | None, rollout: str) -> bool:
    """Whether a Secret with these annotations was made available to the rollout `rollout`
    (of its namespace): the opt-in annotation lists the name, or `*`."""
    value = (annotations or {}).get(SECRET_OPT_IN)
    if not isinstance(value, str):
        return False
    names = {name.strip() for name in value.split(",")}
    return "*" in names or rollout in names


def secret_not_allowed(namespace: str, name: str, rollout: str) -> str:
    """Why a Secret was not read, and how its owner makes it available."""
    return (
        f"Secret {namespace}/{name} is not made available to CanaryRollout {rollout}: "
        f'its owner opts in with the annotation {SECRET_OPT_IN}: "{rollout}" '
        '(rollout names, comma-separated, or "*" for every rollout of the namespace)'
    )
