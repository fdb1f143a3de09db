"""Hospitals: registration (admin) and listing."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["hospitals"])
