"""Results of a hospital: submission, versions, receipts, batches."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["results"])
