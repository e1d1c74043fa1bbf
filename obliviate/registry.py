"""One Registry for methods, audits, benchmarks, datasets and models.

Entries are registered by a decorator in their own module, or lazily by a "module:attr" string
(so the core can name language-model and diffusion entries without importing transformers or
diffusers). A registry discovers its package on first use: every module under
``obliviate/methods/`` registers itself when imported, so adding a method is one new file.

``build(name, **params)`` checks each hyperparameter against the dataclass field and its type,
parsing strings from the command line (``--set beta=0.05``), and every unknown name gets a
"did you mean" error.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import io
import logging
import pkgutil
import tokenize
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["Registry", "METHODS", "AUDITS", "BENCHMARKS", "DATASETS", "MODELS", "coerce_params"]


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} Known: {', '.join(sorted(options)) or '(none)'}."


class Registry(Generic[T]):
    def __init__(self, kind: str, *, discover: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}  # name -> object, or "module:attr" for lazy entries
        self._discover = discover
        self._discovered = False

    # -- registration -------------------------------------------------------------------
    def register(self, name: str) -> Callable[[T], T]:
        if name != name.lower() or " " in name or "_" in name:
            raise ValueError(f"registry key {name!r} must be lowercase with hyphens")

        def deco(obj: T) -> T:
            old = self._entries.get(name)
            if old is not None and not isinstance(old, str) and old is not obj:
                if getattr(old, "__qualname__", None) != getattr(obj, "__qualname__", None):
                    raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def lazy(self, name: str, target: str) -> None:
        """Register ``name`` as "package.module:attr", imported on first use."""
        self._entries.setdefault(name, target)

    # -- lookup -------------------------------------------------------------------------
    def _ensure_discovered(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for pkg_name in self._discover:
            pkg = importlib.import_module(pkg_name)
            for mod in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{pkg_name}.{mod.name}")

    def names(self) -> list[str]:
        self._ensure_discovered()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._ensure_discovered()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._ensure_discovered()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}.{_suggest(name, self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            try:
                mod = importlib.import_module(module)
            except ImportError as e:
                extra = module.split(".")[1] if module.count(".") >= 1 else module
                raise ImportError(
                    f"{self.kind} {name!r} needs an optional dependency ({e.name}). "
                    f"Install it with: pip install 'obliviate[{extra}]'"
                ) from e
            entry = getattr(mod, attr)
            self._entries[name] = entry
        return entry

    def build(self, name: str, params: Mapping[str, Any] | None = None) -> Any:
        """Instantiate entry ``name`` with ``params`` checked against its dataclass fields."""
        cls = self.get(name)
        params = dict(params or {})
        what = f"{self.kind} {name!r}"
        if dataclasses.is_dataclass(cls) and not isinstance(cls, type):
            # a registered instance (a benchmark): parameters override its fields
            return dataclasses.replace(cls, **coerce_params(type(cls), params, what=what))
        if dataclasses.is_dataclass(cls):
            return cls(**coerce_params(cls, params, what=what))
        if params:
            raise TypeError(f"{self.kind} {name!r} takes no parameters, got {sorted(params)}")
        return cls() if inspect.isclass(cls) else cls

    def describe(self, name: str) -> list[tuple[str, str, Any, str]]:
        """(field, type, default, comment) for every hyperparameter of entry ``name``."""
        obj = self.get(name)
        if not dataclasses.is_dataclass(obj):
            return []
        cls = obj if isinstance(obj, type) else type(obj)
        comments = _field_comments(cls)
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if not isinstance(obj, type):
                default = getattr(obj, f.name)
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = f.default
            rows.append((f.name, _type_name(hints.get(f.name)), default, comments.get(f.name, "")))
        return rows


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each ``name: type = default`` line in a dataclass body."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    last_name: str | None = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.NAME and tok.start[1] == 4 and last_name is None:
                last_name = tok.string
            elif tok.type == tokenize.COMMENT and last_name is not None:
                out.setdefault(last_name, tok.string.lstrip("#").strip())
            elif tok.type in (tokenize.NEWLINE, tokenize.NL):
                last_name = None
    except tokenize.TokenError:
        pass
    return out


# -- parameter coercion -----------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"{key}: {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value):
                return c
        raise ValueError(f"{key}: {value!r} is not one of {list(choices)}")
    if origin in (tuple, list):
        args = get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v.strip() if isinstance(v, str) else v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise TypeError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise TypeError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise TypeError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise TypeError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{key}: expected a string, got {value!r}")
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError(f"{key}: expected a table, got {value!r}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        # a nested option table, e.g. finetune-recovery's configs or ResAlign's inner_configs
        # written in a TOML config or a spec (JSON) as [{name = "...", lr = 1e-3}, ...]
        return tp(**coerce_params(tp, value, what=f"{key}: an entry ({tp.__name__})"))
    return value


def coerce_params(cls: type, params: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """Check ``params`` against the init fields of dataclass ``cls`` and coerce their types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out = {}
    for key, value in params.items():
        if key not in fields:
            raise ValueError(
                f"{what} has no hyperparameter {key!r}.{_suggest(key, list(fields))} "
                f"See `obliviate list -v` for every hyperparameter and its default."
            )
        try:
            out[key] = _coerce(value, hints.get(key, Any), key)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{what}: bad value for hyperparameter {e}") from None
    return out


METHODS: Registry[Any] = Registry("method", discover=("obliviate.methods",))
AUDITS: Registry[Any] = Registry("audit", discover=("obliviate.audits",))
BENCHMARKS: Registry[Any] = Registry("benchmark", discover=("obliviate.bench",))
DATASETS: Registry[Any] = Registry("dataset", discover=("obliviate.vision.data",))
MODELS: Registry[Any] = Registry("model", discover=("obliviate.vision.models",))
