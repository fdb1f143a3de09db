"""Intake adapters: real-world result formats → ``ResultRecord``s. Pure functions (bytes, text or parsed
JSON in; a list of records out): no database, network, clock or file access, like the rest of ``ledger``.

Kept out of ``ledger/__init__`` on purpose: the adapters pull in fhir.resources, python-hl7 and pydicom,
which a verifier — who only hashes records — does not need. Mappings and refusals: docs/formats.md.
"""

from mrledger.ledger.formats._common import FormatError, VersionArg
from mrledger.ledger.formats.dicom import from_dicom
from mrledger.ledger.formats.fhir import from_fhir
from mrledger.ledger.formats.hl7v2 import from_hl7v2

__all__ = ["FormatError", "VersionArg", "from_dicom", "from_fhir", "from_hl7v2"]
