"""What a certificate may be used for, beyond its key usage: the batch-signing extended key usage, and the
name constraints of the CAs above it (docs/signatures.md §1, §4). Apart from ``_x509`` so each stays one
story a reviewer can check against RFC 5280: ``_x509`` walks the path, this module says which names and
purposes the path allows.

Name constraints follow RFC 5280 §4.2.1.10 for directory names, DNS names, IP addresses, mailboxes and URIs
with a host; mrledger's hospital URNs (``urn:mrledger:hospital:<id>``, which have no host) are matched by a rule
of its own: a URI constraint starting with that prefix matches the URN equal to it, and — when it ends in
``-``, ``.``, ``_`` or ``:`` — every URN it is a prefix of. Any other name form under a constraint of its kind
is refused (``certificate-untrusted``), as RFC 5280 requires of a form a verifier does not process.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mrledger.ledger.errors import SignatureError
from mrledger.ledger.records import format_time

#: The SAN URI prefix that names a hospital; the rest is the hospital id, compared exactly.
HOSPITAL_URI_PREFIX = "urn:mrledger:hospital:"
#: The extended key usage of a hospital's batch-signing certificate (docs/signatures.md §1). An OID under
#: 2.25 (ITU-T X.667 / RFC 4122: a UUID as an OID, which needs no registration), from the UUID
#: 4fdab94d-0fd0-4cb0-8633-837f338517eb. Without it, any certificate a trusted CA issued for another purpose
#: (a TLS server, code signing) that happened to name a hospital could sign its batches.
BATCH_SIGNING_EKU = x509.ObjectIdentifier("2.25.106144690733408229413752722278660249579")
#: A leaf certificate with no extendedKeyUsage extension at all is accepted only if its notBefore is before
#: this instant: certificates issued before mrledger defined its EKU (the dev PKI's, a region's first ones)
#: keep verifying the receipts they signed. One that carries an EKU without batch signing is refused whatever
#: its date; from this instant on every new certificate must carry it.
EKU_REQUIRED_FROM = datetime(2027, 1, 1, tzinfo=UTC)


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def who(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x})"


# -- extended key usage -----------------------------------------------------------------------------------


def signs_batches(cert: x509.Certificate) -> bool:
    """The certificate carries the batch-signing extended key usage."""
    eku = ext(cert, x509.ExtendedKeyUsage)
    return eku is not None and BATCH_SIGNING_EKU in eku


def eku_problem(cert: x509.Certificate, *, leaf: bool, required_from: datetime) -> str | None:
    """Why ``cert`` may not take part in batch signing by its extendedKeyUsage, or None. A leaf needs the
    batch-signing OID (``anyExtendedKeyUsage`` is not enough: it is what a general-purpose certificate says);
    only a leaf issued before ``required_from`` may have no EKU extension at all. A CA certificate without the
    extension is unrestricted; with it, it must allow batch signing or any usage ("EKU chaining", as the Web
    PKI and Microsoft apply it): a CA meant for TLS or code signing cannot certify batch signers."""
    eku = ext(cert, x509.ExtendedKeyUsage)
    if eku is None:
        if not leaf or cert.not_valid_before_utc < required_from:
            return None
        return (f"has no extendedKeyUsage; certificates issued from {format_time(required_from)} on need "
                f"batch signing ({BATCH_SIGNING_EKU.dotted_string})")
    if BATCH_SIGNING_EKU in eku or (not leaf and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku):
        return None
    usages = ", ".join(sorted(getattr(o, "_name", None) or o.dotted_string for o in eku))
    return f"has extendedKeyUsage {usages}, not batch signing ({BATCH_SIGNING_EKU.dotted_string})"


# -- name constraints (RFC 5280 §4.2.1.10) ------------------------------------------------------------------

#: A URI name constraint that ends in one of these permits or excludes every hospital URN it is a prefix of.
_SUBTREE_ENDS = frozenset("-._:")


def _kind(name: x509.GeneralName) -> str:
    return type(name).__name__


def _names(cert: x509.Certificate) -> Iterator[x509.GeneralName]:
    """Every name a certificate binds: its subject (as a directoryName, if not empty), email addresses in the
    subject (RFC 5280 §4.2.1.10 counts them as rfc822Names), and its subjectAltName entries."""
    if len(cert.subject) > 0:
        yield x509.DirectoryName(cert.subject)
    for attribute in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        yield x509.RFC822Name(str(attribute.value))
    san = ext(cert, x509.SubjectAlternativeName)
    if san is not None:
        yield from san


def _uri_host(uri: str) -> str | None:
    """The host of a URI with an authority (RFC 3986 §3.2: ``scheme://[userinfo@]host[:port]…``); None for one
    without (a URN). Written out because ``ledger/`` imports no networking module, urllib included."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme or not scheme[0].isalpha():
        return None
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    host = authority[1:authority.find("]")] if authority.startswith("[") else authority.rsplit(":", 1)[0]
    return host or None


def _host_within(host: str, constraint: str) -> bool:
    """RFC 5280's host rule for URI, DNS and mailbox-host constraints: ``.example.org`` matches hosts below
    example.org; ``example.org`` that host (and, for DNS names, the hosts below it)."""
    host, constraint = host.lower().rstrip("."), constraint.lower().rstrip(".")
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    """``name`` lies in ``subtree`` (both of one kind). Raises SignatureError for a name form not processed."""
    value, limit = name.value, subtree.value
    if isinstance(name, x509.UniformResourceIdentifier):
        if limit.startswith(HOSPITAL_URI_PREFIX):  # mrledger's own rule for its URNs (docs/signatures.md §1)
            return bool(value == limit or (limit[-1] in _SUBTREE_ENDS and value.startswith(limit)))
        host = _uri_host(value)
        return host is not None and _host_within(host, limit)  # a URN has no host: outside any host subtree
    if isinstance(name, x509.DNSName):
        if not limit:
            return True
        host, limit = value.lower().rstrip("."), limit.lower().rstrip(".").lstrip(".")
        return bool(host == limit or host.endswith("." + limit))
    if isinstance(name, x509.IPAddress):
        return isinstance(limit, ipaddress.IPv4Network | ipaddress.IPv6Network) and value in limit
    if isinstance(name, x509.DirectoryName):
        return list(value.rdns[:len(limit.rdns)]) == list(limit.rdns)
    if isinstance(name, x509.RFC822Name):
        if "@" in limit:
            return bool(value.lower() == limit.lower())
        return "@" in value and _host_within(value.rsplit("@", 1)[1], limit)
    raise SignatureError("certificate-untrusted", f"name constraints on {_kind(name)} names are not supported")


def check_name_constraints(path: Sequence[x509.Certificate]) -> None:
    """RFC 5280 §6.1.3 (b, c) and §6.1.4 (g) for ``path`` (leaf … anchor): every name of every certificate
    below a CA that carries nameConstraints — the anchor's included, since a region's root is where a
    deployment would put them — must be within one of its permitted subtrees of that name's kind (when there
    are any) and in none of its excluded ones. Self-issued intermediates are exempt, as RFC 5280 says."""
    for depth, ca in enumerate(path[1:], start=1):
        constraints = ext(ca, x509.NameConstraints)
        if constraints is None:
            continue
        permitted = list(constraints.permitted_subtrees or ())
        excluded = list(constraints.excluded_subtrees or ())
        for position, cert in enumerate(path[:depth]):
            if position > 0 and cert.subject == cert.issuer:
                continue
            for name in _names(cert):
                kind = _kind(name)
                allowed = [s for s in permitted if _kind(s) == kind]
                if allowed and not any(_within(name, s) for s in allowed):
                    raise SignatureError("certificate-untrusted", f"{who(cert)} names {_show(name)}, outside the "
                                                                  f"permitted names of {who(ca)}")
                if any(_within(name, s) for s in excluded if _kind(s) == kind):
                    raise SignatureError("certificate-untrusted", f"{who(cert)} names {_show(name)}, excluded by "
                                                                  f"the name constraints of {who(ca)}")


def _show(name: x509.GeneralName) -> str:
    value = name.value.rfc4514_string() if isinstance(name, x509.DirectoryName) else name.value
    return f"{_kind(name)} {value}"


__all__ = ["BATCH_SIGNING_EKU", "EKU_REQUIRED_FROM", "HOSPITAL_URI_PREFIX", "check_name_constraints", "eku_problem",
           "ext", "signs_batches", "who"]
