"""Backups and supply-chain evidence as the console and operators read them: ``/backups`` and ``/supply-chain``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["operations"])
