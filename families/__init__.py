"""Every model family this project exports and serves, each declared once (family.py says what a
declaration holds; README "Adding a model family" how to add one)."""

from __future__ import annotations

from families.family import Family
from families.flux import FLUX
from families.kontext import KONTEXT
from families.sdxl import SDXL

FAMILIES: dict[str, Family] = {family.name: family for family in (FLUX, SDXL, KONTEXT)}
"""Metadata `family` -> its declaration."""


def checkpoint_family(checkpoint_class: str) -> Family:
    """The family `imagegen export` exports a diffusers pipeline class as; ValueError for another."""
    for family in FAMILIES.values():
        if family.checkpoint_class == checkpoint_class:
            return family
    supported = ", ".join(family.checkpoint_class for family in FAMILIES.values())
    raise ValueError(f"{checkpoint_class} is not supported (supported: {supported})")
