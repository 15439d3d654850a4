"""What credentials may do: scopes belong to a key or an account, benefits to its plan."""

from __future__ import annotations

IMAGES = "inference.images"
MODELS_READ = "models.read"
ADMIN_MODELS = "admin.models"
"""Roll model versions out and back, reload the catalog, read what each frontend serves."""
SCOPES = frozenset({IMAGES, MODELS_READ, ADMIN_MODELS})

STUDIO_ACCESS = "studio_access"
BENEFITS = frozenset({STUDIO_ACCESS})

STUDIO_PLAN = "studio"
"""The built-in plan with every benefit; the operator's own key (IMAGEGEN_API_KEY) is on it."""


def parse_names(text: str, known: frozenset[str], kind: str) -> frozenset[str]:
    """A comma-separated list of scopes or benefits, refusing unknown names so a typo is caught."""
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = names - known
    if unknown:
        raise ValueError(f"unknown {kind}: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    return names
