"""Typed config nodes: how a plain mapping becomes a checked, frozen dataclass, and how a
pluggable part (a data source, partitioner, model, combine rule, post-processor, algorithm,
soft-label codec) is
named in config and built.

A pluggable part is a node ``{name: <built-in>, **kwargs}`` or ``{_target_: <import path>,
**kwargs}`` (Hydra's convention; a bare string is a name, or an import path if it has a dot).
Its keyword arguments are checked against the class's own schema -- its typed dataclass fields,
else its ``__init__`` signature -- so a key the part does not take fails before anything runs,
with the dotted config key in the message. Nothing here imports torch or Flower: each family's
built-ins are looked up lazily in the module that defines them.
"""

import dataclasses
import importlib
import inspect
import types
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")

TARGET_KEY: Final = "_target_"  # Hydra's convention: a pluggable part by import path
NAME_KEY: Final = "name"  # ... or by a built-in short name


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range. The message names the key."""


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def one_of(value: str, choices: Sequence[str], key: str) -> None:
    require(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Family:
    """A kind of pluggable part: where its built-ins are, what fedkd passes when building one."""

    registry: str  # "module:NAME" of the {short name: class} mapping
    context_args: tuple[str, ...] = ()  # always passed by fedkd (the class must take them)
    optional_args: tuple[str, ...] = ()  # passed by fedkd to classes that take them
    as_string: bool = True  # written back as a bare name when it has no arguments

    def builtins(self) -> Mapping[str, Any]:
        module, name = self.registry.split(":")
        registry: Mapping[str, Any] = getattr(importlib.import_module(module), name)
        return registry


FAMILIES: Final[dict[str, Family]] = {
    "model": Family("fedkd.models.zoo:ARCHITECTURES", ("input_shape", "num_classes")),
    "source": Family("fedkd.data.sources:SOURCES", as_string=False),
    "partitioner": Family(
        "fedkd.data.partition:PARTITIONERS",
        optional_args=("num_partitions", "seed"),
        as_string=False,
    ),
    "combine": Family("fedkd.aggregation:COMBINE_RULES"),
    "postprocess": Family("fedkd.aggregation:POSTPROCESSORS"),
    "algorithm": Family("fedkd.algorithms:ALGORITHMS", as_string=False),
    "attack": Family("fedkd.attacks:ATTACKS", as_string=False),
    "codec": Family("fedkd.codecs:CODECS"),
}


def import_object(path: str, key: str) -> Any:
    """The object at import path ``pkg.module.Name``; a failure raises naming ``key``."""
    module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise ConfigError(f"{key}: {path!r} is not an import path (package.module.Name)")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{key}: cannot import {path!r} ({type(err).__name__}: {err})") from err


def _frozen(value: Any) -> Any:
    """A hashable copy of a JSON-like value (lists -> tuples, mappings -> sorted pairs)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_node(value)
    return value


@dataclasses.dataclass(frozen=True)
class Component:
    """A pluggable part: a class by import path and the keyword arguments the config gave it.

    ``kind`` is what the config said (a built-in short name, or an import path); ``args`` are the
    validated arguments, frozen so that a config stays hashable. :meth:`instantiate` is the one
    way such a part is built.
    """

    family: str
    kind: str
    target: str  # import path of the class
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def cls(self) -> Any:
        return import_object(self.target, self.kind)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: _thawed(v) for k, v in self.args}

    def instantiate(self, **context: Any) -> Any:
        """The part, built with its configured arguments plus what fedkd passes (``context``)."""
        cls = self.cls
        if dataclasses.is_dataclass(cls):
            return build(cls, {**self.kwargs}, "", **context)  # type: ignore[arg-type]
        return cls(**self.kwargs, **context)

    def node(self) -> Any:
        """The config node this component was built from (for ``config.json``)."""
        if FAMILIES[self.family].as_string and not self.args:
            return self.kind
        builtin = FAMILIES[self.family].builtins().get(self.kind)
        head = {NAME_KEY: self.kind} if builtin is not None else {TARGET_KEY: self.kind}
        return {**head, **self.kwargs}


def component(value: Any, family: str, key: str) -> Component:
    """Validate a node of ``family`` into a :class:`Component`.

    The class is imported now (a typo fails before anything runs, naming ``key``) and its
    keyword arguments are checked against its own schema: a dataclass's typed fields, else its
    ``__init__`` signature. The family's context arguments (e.g. a model's ``input_shape``)
    are fedkd's to pass: the class must take them and the config may not set them.
    """
    fam = FAMILIES[family]
    builtins = fam.builtins()
    if isinstance(value, str):
        value = {TARGET_KEY if "." in value else NAME_KEY: value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a name, an import path or a mapping, got {value!r}")
    node = dict(value)
    if (TARGET_KEY in node) == (NAME_KEY in node):
        raise ConfigError(
            f"{key} needs exactly one of '{NAME_KEY}' (built-in: {sorted(builtins)}) or "
            f"'{TARGET_KEY}' (an import path), got keys {sorted(node)}"
        )
    by_name = NAME_KEY in node
    kind = str(node.pop(NAME_KEY) if by_name else node.pop(TARGET_KEY))
    if by_name and kind in builtins:
        cls = builtins[kind]
    elif "." in kind:
        cls = import_object(kind, f"{key}.{TARGET_KEY}" if not by_name else key)
    else:
        raise ConfigError(
            f"{key}: unknown name {kind!r}; built-in: {sorted(builtins)}, or an import path"
        )
    if not callable(cls):
        raise ConfigError(f"{key}: {kind!r} is not a class")
    reserved = sorted(set(node) & {*fam.context_args, *fam.optional_args})
    if reserved:
        raise ConfigError(f"{key}.{reserved[0]} is set by fedkd and cannot be configured")
    target = f"{cls.__module__}.{cls.__qualname__}"
    if dataclasses.is_dataclass(cls):
        instance = build(cls, node, key + ".")  # type: ignore[arg-type]
        args = {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance) if f.init}
    else:
        _check_signature(cls, node, key, fam)
        args = node
    return Component(family, kind, target, _frozen(args))


def _check_signature(cls: Any, node: Mapping[str, Any], key: str, fam: Family) -> None:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no introspectable signature: trust it
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(node) - set(params))
    if unknown:
        raise ConfigError(
            f"unknown key {key}.{unknown[0]}: {cls.__qualname__} takes {sorted(params)}"
        )
    missing = [c for c in fam.context_args if c not in params]
    if missing:
        raise ConfigError(
            f"{key}: {cls.__qualname__} must take the keyword arguments "
            f"{list(fam.context_args)} (fedkd passes them); it lacks {missing}"
        )
    required = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in node
        and n not in (*fam.context_args, *fam.optional_args)
    ]
    if required:
        raise ConfigError(f"{key}.{required[0]} is required by {cls.__qualname__}")


def component_field(family: str, default: str | None) -> Any:
    """A dataclass field holding a :class:`Component` of ``family`` (``None`` allowed)."""

    def factory() -> Component | None:
        return None if default is None else component(default, family, family)

    return dataclasses.field(default_factory=factory, metadata={"family": family})


# ------------------------------------------------------------------------- typed building


def _convert(value: Any, annotation: Any, key: str, family: str | None = None) -> Any:
    """Check ``value`` against a type annotation, coercing int -> float; raise naming ``key``.
    ``family``: the values are pluggable parts of that family (a field's metadata says so)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        (inner,) = (o for o in options if o is not type(None))
        return _convert(value, inner, key, family)
    if family is not None and annotation is Component:
        return component(value, family, key)
    if hasattr(annotation, "from_node"):
        return annotation.from_node(value, key)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return build(annotation, value, key + ".")  # type: ignore[arg-type]
    if origin in (list, tuple):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        items = get_args(annotation)
        if origin is tuple and not (len(items) == 2 and items[1] is Ellipsis):  # fixed length
            if len(value) != len(items):
                raise ConfigError(f"{key} must have {len(items)} items, got {value!r}")
            return tuple(
                _convert(v, t, f"{key}[{i}]", family)
                for i, (v, t) in enumerate(zip(value, items, strict=True))
            )
        converted = [_convert(v, items[0], f"{key}[{i}]", family) for i, v in enumerate(value)]
        return converted if origin is list else tuple(converted)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        _, item = get_args(annotation)
        return {str(k): _convert(v, item, f"{key}.{k}", family) for k, v in value.items()}
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if type(value) is not annotation:
        raise ConfigError(f"{key} must be of type {annotation.__name__}, got {value!r}")
    return value


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "", **fixed: Any) -> T:
    """``cls(**data)`` with every value checked against its annotation; ``fixed`` arguments are
    already built. Unknown keys and out-of-range values raise :class:`ConfigError` naming the
    dotted key (a class's own ``ValueError("alpha must be > 0")`` becomes
    ``"<prefix>alpha must be > 0"``)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + k for k in unknown)}; valid keys under "
            f"'{prefix.rstrip('.') or '<root>'}': {sorted(fields)}"
        )
    hints = get_type_hints(cls)
    kwargs = {
        k: _convert(v, hints[k], prefix + k, fields[k].metadata.get("family"))
        for k, v in data.items()
    }
    try:
        return cls(**kwargs, **fixed)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        first = str(err).split(" ", 1)[0]
        where = f"{prefix}{err}" if first in fields else f"{prefix.rstrip('.')}: {err}"
        raise ConfigError(where) from err


def to_node(value: Any) -> Any:
    """A built config value back as the plain (JSON-like) node it was built from."""
    if isinstance(value, Component):
        return value.node()
    if hasattr(value, "to_node"):
        return value.to_node()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_node(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_node(v) for v in value]
    if isinstance(value, dict):
        return {k: to_node(v) for k, v in value.items()}
    return value
