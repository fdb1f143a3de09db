"""Verification for doctors: a receipt (anyone) or a held record (doctor token)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["verify"])
