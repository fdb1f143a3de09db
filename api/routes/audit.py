"""Auditors: lineage, batches in seq order with gaps, database-vs-chain consistency, access log."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["audit"])
