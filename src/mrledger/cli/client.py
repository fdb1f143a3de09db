"""``mrledger submit`` and ``mrledger receipt``: the commands a hospital integrator runs against a node's
HTTP API (registered on the app in ``cli/main.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mrledger.cli.common import EXIT_PENDING, EXIT_REFUSED, EXIT_USAGE, _err
from mrledger.node.settings import Settings


def _default_api() -> str:
    settings = Settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    return f"http://{host}:{settings.port}/v1"


ApiOpt = Annotated[str | None, typer.Option("--api", envvar="MRL_API_URL", show_default=False,
                                            help="Base URL of the API [default: http://MRL_HOST:MRL_PORT/v1].")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="MRL_TOKEN", show_default=False,
                                              help="Bearer token; prefer MRL_TOKEN (command lines are visible "
                                                   "to other users).")]


def submit(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="json: record(s), a JSON array, "
                                                "{\"records\": [...]}, or JSON Lines; fhir / hl7v2: one resource "
                                                "or Bundle / ER7 messages per file; dicom: files or directories.",
                                                show_default=False)],
    hospital: Annotated[str, typer.Option("--hospital", help="Hospital id.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="json, fhir, hl7v2 or dicom.")] = "json",
    tz: Annotated[str | None, typer.Option("--tz", show_default=False, help="IANA zone of times without a UTC "
                                           "offset (required for dicom; hl7v2: when its times lack one).")] = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit results to a running server, 1,000 records per request.

    --format fhir / hl7v2 post each file as it is to the FHIR / HL7 v2 endpoint, which assigns versions
    from the results' status (docs/formats.md). --format dicom fingerprints the images here and posts only
    the imaging records: studies are large, and the ledger commits their fingerprints, not their pixels.

    Submission is idempotent: after an error, running the same command again is safe (what was already
    accepted comes back as duplicates). Exit 0 when all were accepted, 1 if the server refused a chunk,
    2 on unreadable files or an unreachable server.
    """
    from rich.progress import Progress

    from mrledger.cli.http_client import (
        FORMATS,
        ApiClient,
        ApiError,
        ClientError,
        chunks,
        load_dicom_records,
        load_records,
    )

    if fmt not in FORMATS or (fmt == "dicom" and not tz):
        _err(f"--format must be one of {', '.join(FORMATS)}" if fmt not in FORMATS else "--format dicom needs --tz")
        raise typer.Exit(EXIT_USAGE)
    if fmt in ("fhir", "hl7v2"):
        _submit_raw(files, hospital, fmt, tz, api, token)
        return
    try:
        records = load_dicom_records(files, hospital, tz or "") if fmt == "dicom" else load_records(files)
    except ClientError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    accepted = duplicates = 0
    with ApiClient(api or _default_api(), token) as client, Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task(f"submitting to {hospital}", total=len(records))
        for chunk in chunks(records):
            try:
                answer = client.submit(hospital, chunk)
            except ApiError as exc:
                progress.stop()
                _err(f"{exc.title}" + (f": {exc.detail}" if exc.detail else "")
                     + f" (after {accepted + duplicates} of {len(records)} records were taken)")
                raise typer.Exit(EXIT_REFUSED) from None
            except ClientError as exc:
                progress.stop()
                _err(str(exc))
                raise typer.Exit(EXIT_USAGE) from None
            accepted += int(answer.get("accepted", 0))
            duplicates += int(answer.get("duplicates", 0))
            progress.advance(task, len(chunk))
    typer.echo(f"{accepted} accepted, {duplicates} duplicates ({len(records)} records)")


def _submit_raw(files: list[Path], hospital: str, fmt: str, tz: str | None, api: str | None,
                token: str | None) -> None:
    """One request per file (a file is one export: a Bundle or a batch of messages, all or nothing)."""
    from mrledger.cli.http_client import ApiClient, ApiError, ClientError

    accepted = duplicates = 0
    with ApiClient(api or _default_api(), token) as client:
        for done, path in enumerate(files):
            try:
                answer = client.submit_raw(hospital, fmt, path.read_bytes(), tz)
            except OSError as exc:
                _err(f"cannot read {path}: {exc.strerror or exc}")
                raise typer.Exit(EXIT_USAGE) from None
            except ApiError as exc:
                _err(f"{path}: {exc.title}" + (f": {exc.detail}" if exc.detail else "")
                     + f" (after {done} of {len(files)} files were taken)")
                raise typer.Exit(EXIT_REFUSED) from None
            except ClientError as exc:
                _err(str(exc))
                raise typer.Exit(EXIT_USAGE) from None
            accepted += int(answer.get("accepted", 0))
            duplicates += int(answer.get("duplicates", 0))
    typer.echo(f"{accepted} accepted, {duplicates} duplicates ({len(files)} files)")


def receipt(
    hospital_id: Annotated[str, typer.Argument(metavar="HID", show_default=False, help="Hospital id.")],
    result_id: Annotated[str, typer.Argument(metavar="RESULT_ID", show_default=False, help="Result id.")],
    version: Annotated[int | None, typer.Option("--version", help="Version (default: the latest).",
                                                show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the receipt here instead of stdout.",
                                             show_default=False)] = None,
    qr_file: Annotated[Path | None, typer.Option(
        "--qr", metavar="FILE", show_default=False,
        help="Also write it as a QR code for the printed report (SVG if FILE ends in .svg, else PNG); "
             "a reference QR when the full receipt would not fit (docs/receipt.md §14).")] = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Fetch a result's receipt (mrl-receipt/1 JSON) from a running server.

    Exit 0 with the receipt, 3 while its batch is not anchored yet (try again shortly), 1 if the server
    refused (unknown result, not allowed), 2 if no server answers.
    """
    from mrledger.cli.http_client import ApiClient, ApiError, ClientError

    try:
        with ApiClient(api or _default_api(), token) as client:
            data = client.receipt(hospital_id, result_id, version)
    except ApiError as exc:
        _err(f"{exc.title}" + (f": {exc.detail}" if exc.detail else ""))
        raise typer.Exit(EXIT_PENDING if exc.status == 409 else EXIT_REFUSED) from None
    except ClientError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    if qr_file is not None:
        from mrledger.ledger.canonical import parse_json
        from mrledger.service import qr

        text, form = qr.qr_text(parse_json(data))
        qr_file.write_bytes(qr.render(text, "svg" if qr_file.suffix.lower() == ".svg" else "png"))
        Console(stderr=True).print(f"QR ({form}, version {qr.make(text).version}) written to {qr_file}",
                                   soft_wrap=True, highlight=False)
    if out is None:
        typer.echo(data.decode("utf-8"))
    else:
        out.write_bytes(data)
        Console(stderr=True).print(f"receipt written to {out}", soft_wrap=True, highlight=False)
