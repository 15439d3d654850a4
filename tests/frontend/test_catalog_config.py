"""The operator's catalog file (IMAGEGEN_CATALOG): what parses, and what is refused with a message
naming the problem, so a typo never silently changes what clients can call."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontend.catalog import DEFAULT_ALIASES, CatalogConfig, Flavour


def read(tmp_path: Path, text: str) -> CatalogConfig:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return CatalogConfig.read(path)


def test_a_full_catalog_parses(tmp_path: Path) -> None:
    config = read(
        tmp_path,
        """
default_model = "painter"
[models]
"painter" = "sdxl"
[aliases]
"dall-e-2" = "painter"
[flavours."painter".eco]
steps = 12
guidance = 3
[flavours."painter".speed]
pipeline = "flux-schnell"
""",
    )
    assert config == CatalogConfig(
        models={"painter": "sdxl"},
        aliases={"dall-e-2": "painter"},
        flavours={"painter": {"eco": Flavour(steps=12, guidance=3), "speed": Flavour(pipeline="flux-schnell")}},
        default_model="painter",
    )


def test_an_empty_catalog_keeps_every_pipeline_public_and_the_default_aliases(tmp_path: Path) -> None:
    assert read(tmp_path, "") == CatalogConfig(models=None, aliases=DEFAULT_ALIASES)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[models\n", "Expected ']'"),
        ('modles = {"a" = "b"}', "unknown keys ['modles']"),
        ('[flavours."flux-dev".fancy]\nsteps = 2', "flux-dev:fancy is not one of balanced, speed, price, eco, batch"),
        ('[flavours."flux-dev".eco]\nstpes = 2', "unexpected keyword argument 'stpes'"),
        ('[flavours."flux-dev".eco]\nsteps = "two"', "`steps` has the wrong type"),
        ('flavours = "eco"', "`flavours` must be a table"),
        ("[aliases]\nx = 1", "targets must be strings"),
    ],
)
def test_a_wrong_catalog_is_refused_with_its_problem(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        read(tmp_path, text)
    assert problem in str(refused.value)
