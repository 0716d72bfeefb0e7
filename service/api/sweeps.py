"""Placeholder router for sweeps (filled in by its own change); registered in main.py."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
