"""A small HTTP client of a running ``mrledger serve``, for ``mrledger submit`` and ``mrledger receipt``.

Why a client at all rather than writing to the database: a hospital's upload machine holds a hospital
token, not database credentials, and the API is where authorisation, validation and the access log
live. Errors come back as RFC 9457 problems; this module turns them into ``ApiError`` carrying the
problem's ``title`` and ``detail`` so the CLI can print them as the server phrased them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from mrledger.ledger.canonical import parse_json
from mrledger.ledger.errors import EncodingError
from mrledger.node.settings import MAX_RECORDS_PER_REQUEST

#: ``mrledger submit --format``: records as JSON (``json``, ``dicom`` — fingerprinted locally) or the raw
#: content of the files, posted to the intake endpoints with these media types.
RAW_MEDIA_TYPES = {"fhir": "application/fhir+json", "hl7v2": "x-application/hl7-v2+er7"}
FORMATS = ("json", "fhir", "hl7v2", "dicom")



def result_segment(result_id: str) -> str:
    """A result id as one URL path segment: every reserved character percent-encoded (``/`` too: ids like
    ``Observation/f001`` are common), and ``.`` as ``%2E`` so that an id ``..`` is not a dot segment that
    the client library resolves away before sending (RFC 3986 §5.2.4). The server decodes it back
    (``mrledger.http.routes.results.ResultIdPath``)."""
    return quote(result_id, safe="").replace(".", "%2E")

class ClientError(Exception):
    """Something the user has to fix before calling again (unreadable file, malformed records)."""


class ApiUnreachable(ClientError):
    """No server answered: wrong URL, or ``mrledger serve`` is not running."""


@dataclass
class ApiError(Exception):
    """The server answered with an error (an RFC 9457 problem when it is mrledger)."""

    status: int
    title: str
    detail: str = ""
    problem: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.title}" + (f": {self.detail}" if self.detail else "")


def api_root(url: str) -> str:
    """``http://host:port``, ``…/`` and ``…/v1`` all name the same API; normalise to the ``/v1`` root."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def load_records(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Records from files holding one record, a JSON array of records, ``{"records": [...]}``, or JSON
    Lines (one record per line) — the shapes hospital export jobs produce. Validation is the server's."""
    records: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
        # Strictly, as the server will (no duplicate keys, depth bounded before decoding, no number a double
        # cannot hold), but without the server's size bound: an export file may hold many requests' worth.
        try:
            items = _items(parse_json(text, max_bytes=None))
        except EncodingError:
            try:
                items = [parse_json(line, max_bytes=None) for line in text.splitlines() if line.strip()]
            except EncodingError as exc:
                raise ClientError(f"{path} is neither JSON nor JSON Lines: {exc}") from exc
        bad = next((i for i, item in enumerate(items) if not isinstance(item, dict)), None)
        if bad is not None:
            raise ClientError(f"{path}: item {bad} is not a JSON object")
        records.extend(items)
    return records


def dicom_files(paths: Sequence[Path]) -> list[Path]:
    """The files to fingerprint: each file given, and every file under each directory given (recursively,
    sorted; hidden files and DICOMDIR media indexes skipped, they hold no pixels)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.name != "DICOMDIR"
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            files.append(path)
        else:
            raise ClientError(f"cannot read {path}: no such file or directory")
    if not files:
        raise ClientError("no DICOM files found in " + ", ".join(str(p) for p in paths))
    return files


def load_dicom_records(paths: Sequence[Path], hospital_id: str, tz: str) -> list[dict[str, Any]]:
    """Imaging records built here, from the files on this machine: DICOM studies are large and the
    ledger commits only their fingerprints (SHA-256 per decoded frame), so only those travel and
    are posted as JSON records to ``POST …/results``. ``tz`` is the modality's zone (IANA name), applied
    when an instance has no TimezoneOffsetFromUTC."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from mrledger.ledger.formats import FormatError, from_dicom

    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ClientError(f"--tz {tz!r} is not an IANA time zone name (e.g. Europe/Berlin, UTC)") from exc
    files = dicom_files(paths)

    def blobs() -> Iterator[bytes]:
        for path in files:
            try:
                yield path.read_bytes()
            except OSError as exc:
                raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from exc

    try:
        records = from_dicom(blobs(), hospital_id, default_tz=zone)
    except FormatError as exc:
        # The adapter numbers instances from 1 in the order given; name the file instead.
        message = re.sub(r"instance (\d+)", lambda m: _file_name(files, int(m[1])), str(exc))
        raise ClientError(message) from exc
    return [r.to_obj() for r in records]


def _file_name(files: Sequence[Path], number: int) -> str:
    return str(files[number - 1]) if 1 <= number <= len(files) else f"instance {number}"


def _items(doc: Any) -> list[Any]:
    if isinstance(doc, dict) and isinstance(doc.get("records"), list):
        return list(doc["records"])
    if isinstance(doc, list):
        return doc
    return [doc]


def chunks(records: Sequence[dict[str, Any]], size: int = MAX_RECORDS_PER_REQUEST) -> Iterator[list[dict[str, Any]]]:
    """Requests of at most ``size`` records: the server refuses larger ones."""
    for i in range(0, len(records), size):
        yield list(records[i:i + size])


class ApiClient:
    """Calls of the mrledger API; one ``httpx.Client`` (keep-alive) per instance."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.root = api_root(url)
        self._http = httpx.Client(base_url=self.root, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"no mrledger API answers at {self.root} ({type(exc).__name__}); "
                                 "is `mrledger serve` running?") from exc
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def submit(self, hospital_id: str, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One submission request (at most ``MAX_RECORDS_PER_REQUEST`` records); the server answers 202
        only once the records are committed, so an answered chunk is never lost."""
        response = self._request("POST", f"/hospitals/{quote(hospital_id, safe='')}/results",
                                 json={"records": list(records)})
        body: dict[str, Any] = response.json()
        return body

    def submit_raw(self, hospital_id: str, fmt: str, data: bytes, tz: str | None = None) -> dict[str, Any]:
        """Post a FHIR resource/Bundle or HL7 v2 messages as they are; the server parses, versions and
        stores them (one request per file: all or nothing, as the file was exported)."""
        params = {"tz": tz} if tz else None
        response = self._request("POST", f"/hospitals/{quote(hospital_id, safe='')}/{fmt}", content=data,
                                 params=params, headers={"Content-Type": RAW_MEDIA_TYPES[fmt]})
        body: dict[str, Any] = response.json()
        return body

    def receipt(self, hospital_id: str, result_id: str, version: int | None = None) -> bytes:
        """The receipt's bytes exactly as served (so a saved file is byte-identical to what was issued)."""
        params = {"version": version} if version is not None else None
        path = f"/hospitals/{quote(hospital_id, safe='')}/results/{result_segment(result_id)}/receipt"
        return self._request("GET", path, params=params).content

    def status_proof(self, hospital_id: str, result_id: str, key: bytes) -> Any:
        """The result's ``mrl-status-proof/1`` (no token needed: the key is the proof of holding the receipt)."""
        path = f"/hospitals/{quote(hospital_id, safe='')}/results/{result_segment(result_id)}/status-proof"
        return self._request("GET", path, params={"key": key.hex()}).json()

    def kpis(self, params: dict[str, str], *, csv: bool = False) -> Any:
        """The KPI report (``GET /v1/kpis``) as parsed JSON, or with ``csv`` the CSV text (``/v1/kpis.csv``)."""
        response = self._request("GET", "/kpis.csv" if csv else "/kpis", params=params)
        return response.text if csv else response.json()


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "title" in body:
        return ApiError(response.status_code, str(body["title"]), str(body.get("detail", "")), body)
    reason = response.reason_phrase or "HTTP error"
    return ApiError(response.status_code, reason, response.text[:200] if response.text else "")
