"""Maintenance mode as a run-time switch: ``GET`` and ``PUT /maintenance-mode``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["maintenance"])
