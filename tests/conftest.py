"""Shared fixtures: where ../shared is, the RFC 4575 schema, and the torture corpus."""

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


@pytest.fixture(scope="session")
def schema(shared_dir):
    """The RFC 4575 conference-info schema (every document we emit must pass)."""
    from lxml import etree
    xsd = shared_dir / "conference-info" / "conference-info.local-import.xsd"
    return etree.XMLSchema(etree.parse(str(xsd)))
