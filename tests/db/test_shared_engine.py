"""The composition root builds one engine and every store of the API uses it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.app_state import build_state
from service.config import Settings
from tests.conftest import load_terms, load_trials


def test_the_apis_stores_share_the_one_engine(tmp_path: Path) -> None:
    settings = Settings(auth_disabled=True, database_url=f"sqlite:///{tmp_path / 'app.db'}")
    state = build_state(settings, terms=load_terms(), trials=load_trials())
    try:
        engines = {
            "audit": state.audit.engine,
            "smart": state.smart.store.engine,
            "cds": state.cds.store.engine,
            "sweeps": state.sweeps.store.engine,
        }
        assert {name: engine is state.engine for name, engine in engines.items()} == dict.fromkeys(
            engines, True
        )
    finally:
        asyncio.run(state.aclose())
