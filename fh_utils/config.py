"""What every configuration object shares: built from a dict that may hold only its own fields.

An unknown key is an error that names the known ones, so a typo (``warmup=2``) never vanishes silently.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

C = TypeVar("C")


class UnknownSettingError(TypeError):
    """A configuration was given a key it does not declare."""


def field_names(cls: type) -> list[str]:
    """The declared fields of a configuration dataclass, in order."""
    return [f.name for f in fields(cls)]


def check_known(cls: type, values: dict[str, Any], where: str | None = None) -> None:
    """Raise :class:`UnknownSettingError` when ``values`` has keys that ``cls`` does not declare."""
    unknown = sorted(set(values) - set(field_names(cls)))
    if unknown:
        place = f" ({where})" if where else ""
        raise UnknownSettingError(
            f"{cls.__name__}: unknown setting(s) {unknown}{place}; known: {', '.join(field_names(cls))}"
        )


def config_from_dict(cls: type[C], values: dict[str, Any] | None, where: str | None = None) -> C:
    """``cls(**values)`` after checking that every key is a field of ``cls``."""
    values = dict(values or {})
    check_known(cls, values, where)
    return cls(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A configuration dataclass as a plain JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
