"""Shared fixtures: where ../shared is, and the torture corpus."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("MFOCUS_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        raise RuntimeError(f"shared/ not found at {SHARED}; set MFOCUS_SHARED")
    return SHARED
