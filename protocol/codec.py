"""The wire codec: tagged, versioned msgpack frames for frozen dataclass messages.

Every message type registers itself with :func:`message` under a unique integer tag.
A frame is the msgpack array ``[WIRE_VERSION, tag, field_1, ..., field_n]``; a message
nested inside another is the array ``[tag, field_1, ..., field_n]``. Field order is the
dataclass field order, so adding a field is a format change (bump the version) --
except for messages registered ``extensible``: their decoder ignores fields beyond the
ones it knows and fills missing trailing fields that have defaults, so a reader and a
writer one release apart understand each other (new fields go last, with defaults).

Decoding is driven by the type hints of the target class, and checks every value
against them, so that :func:`decode` of untrusted bytes either returns a well-typed
message or raises :class:`ProtocolError`, never anything else.

Supported field types: ``int``, ``float`` (ints accepted), ``str``, ``bytes``, ``bool``,
``None``, ``NewType``\\ s of those, ``IntEnum`` subclasses, ``X | Y`` / ``Optional``,
``tuple[X, ...]``, fixed ``tuple[X, Y]``, ``dict[K, V]`` and registered messages.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from protocol.fastinit import fast_frozen_init
from protocol.packing import packb as _packb

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "WIRE_VERSION",
    "Message",
    "ProtocolError",
    "decode",
    "encode",
    "message",
    "registered_messages",
    "unpack_frame",
]

WIRE_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024

# unpackb bounds every container and string by the input's length itself, so a hostile
# frame cannot make it allocate much more than the frame. (Called with its options
# spelled out: a functools.partial would add ~0.1 us to every frame.)
_unpackb = msgpack.unpackb
#: Frame types decode accepts (a tuple: ``bytes | bytearray`` would be built per call).
_BYTES_LIKE = (bytes, bytearray, memoryview)


class ProtocolError(Exception):
    """Raised for any frame that is not a well-formed message of a known type/version."""


class Message:
    """Marker base class for registered messages (gives them ``encode()``)."""

    __slots__ = ()
    TAG: typing.ClassVar[int]

    def encode(self) -> bytes:
        return encode(self)


M = TypeVar("M")
_Decoder = Callable[[Any], Any]
_Encoder = Callable[[Any], Any]
_MessageEncoder = Callable[[Any], list[Any]]

_BY_TAG: dict[int, type[Any]] = {}
_CLASSES: set[type[Any]] = set()
_DECODERS: dict[type[Any], _Decoder] = {}
#: Whole-frame decoders (``[version, tag, field...]``) by tag.
_FRAME_DECODERS: dict[int, _Decoder] = {}
_ENCODERS: dict[type[Any], _MessageEncoder] = {}
_FRAME_ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {}
#: Classes registered ``extensible`` (see the module docstring).
_EXTENSIBLE: set[type[Any]] = set()


def message(tag: int, *, extensible: bool = False) -> Callable[[type[M]], type[M]]:
    """Class decorator: register a frozen dataclass as a wire message under ``tag``.

    ``extensible``: decoding tolerates a writer with more fields (ignored) or fewer
    (trailing fields with defaults get them), for messages that must cross versions,
    such as a node's status read by an older or newer operator tool."""

    def register(cls: type[M]) -> type[M]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        if tag in _BY_TAG and _BY_TAG[tag] is not cls:
            raise ValueError(f"tag {tag} already used by {_BY_TAG[tag].__name__}")
        cls.TAG = tag  # type: ignore[attr-defined]
        _BY_TAG[tag] = cls
        _CLASSES.add(cls)
        if extensible:
            _EXTENSIBLE.add(cls)
        return fast_frozen_init(cls)

    return register


def registered_messages() -> dict[int, type[Any]]:
    """All registered message classes by tag (for tests and documentation)."""
    return dict(_BY_TAG)


def encode(msg: Any) -> bytes:
    """Encode a registered message as one frame."""
    frame = _FRAME_ENCODERS.get(type(msg))
    if frame is None:
        frame = _frame_encoder_for(type(msg))
    return frame(msg)


def unpack_frame(data: bytes, *, max_bytes: int, max_items: int | None = None) -> Any:
    """The msgpack value of a frame, within ``max_bytes`` and (if given) with no array
    or map longer than ``max_items``; :class:`ProtocolError` for anything else. The one
    place untrusted frames are unpacked (``decode`` and the wire's batch fast path)."""
    if len(data) > max_bytes:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        if max_items is None:
            return _unpackb(data, raw=False, strict_map_key=False, use_list=True)
        return _unpackb(
            data,
            raw=False,
            strict_map_key=False,
            use_list=True,
            max_array_len=max_items,
            max_map_len=max_items,
        )
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise ProtocolError(f"malformed msgpack: {exc}") from None


def decode(
    data: bytes,
    expected: type[M] | tuple[type[Any], ...] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_items: int | None = None,
) -> M:
    """Decode one frame; raise :class:`ProtocolError` if it is anything but valid.

    ``expected`` restricts the accepted message classes (a frame of another type is a
    ``ProtocolError`` too). ``max_items`` bounds every array and map in the frame while
    it is unpacked: a frame from an untrusted sender made of a million tiny arrays
    would otherwise cost a long unpack (holding the GIL) before its shape is refused.
    """
    if type(data) is not bytes and not isinstance(data, _BYTES_LIKE):
        raise ProtocolError(f"frame must be bytes, not {type(data).__name__}")
    raw = unpack_frame(data, max_bytes=max_bytes, max_items=max_items)
    if type(raw) is not list or len(raw) < 2:
        raise ProtocolError("frame is not a [version, tag, ...] array")
    version = raw[0]
    if version != WIRE_VERSION or type(version) is not int:
        raise ProtocolError(f"unsupported wire version {version!r} (expected {WIRE_VERSION})")
    tag = raw[1]
    dec = _FRAME_DECODERS.get(tag) if type(tag) is int else None
    msg = (dec or _frame_decoder_for(tag))(raw)
    if expected is not None and not isinstance(msg, expected):
        raise ProtocolError(f"unexpected message type {type(msg).__name__}")
    return msg  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- internals


def _decode_tagged(raw: list[Any], where: str, allowed: tuple[type[Any], ...] = ()) -> Any:
    tag = raw[0]
    if type(tag) is not int:
        raise ProtocolError(f"{where}: tag must be an int")
    cls = _BY_TAG.get(tag)
    if cls is None or (allowed and cls not in allowed):
        raise ProtocolError(f"{where}: unknown message tag {tag}")
    return _decoder_for(cls)(raw)


def _encoder_for(cls: type[Any]) -> _MessageEncoder:
    enc = _ENCODERS.get(cls)
    if enc is None:
        enc = _ENCODERS[cls] = _compile_encoder(cls, frame=False)
    return enc


def _frame_encoder_for(cls: type[Any]) -> Callable[[Any], bytes]:
    enc = _FRAME_ENCODERS.get(cls)
    if enc is None:
        enc = _FRAME_ENCODERS[cls] = _compile_encoder(cls, frame=True)
    return enc


def _compile_encoder(cls: type[Any], *, frame: bool) -> Any:
    """Generate ``cls``'s encoder as one expression (no per-field loop or getattr: this
    is on the hot path of every message). ``frame``: the whole frame's bytes, else the
    nested ``[tag, field, ...]`` array."""
    if cls not in _CLASSES:
        raise TypeError(f"{cls.__name__} is not a registered message")
    hints = typing.get_type_hints(cls)
    namespace: dict[str, Any] = {"_packb": _packb}
    items = [str(cls.TAG)]
    for i, f in enumerate(dataclasses.fields(cls)):
        if not f.name.isidentifier():  # pragma: no cover - dataclass fields always are
            raise TypeError(f"{cls.__name__}: bad field name {f.name!r}")
        fe = _value_encoder(hints[f.name])
        if fe is None:
            items.append(f"m.{f.name}")
        else:
            namespace[f"_e{i}"] = fe
            items.append(f"_e{i}(m.{f.name})")
    body = ", ".join(items)
    if frame:
        src = f"def enc(m):\n    return _packb([{WIRE_VERSION}, {body}])\n"
    else:
        src = f"def enc(m):\n    return [{body}]\n"
    exec(src, namespace)  # source built from checked field names
    return namespace["enc"]


def _value_encoder(tp: Any) -> _Encoder | None:
    """None means 'the value is already msgpack-native'."""
    if isinstance(tp, type) and tp in _CLASSES:
        return _encode_nested
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        subs = [_value_encoder(a) for a in args]
        if all(s is None for s in subs):
            return None
        return lambda v: _encode_nested(v) if type(v) in _CLASSES else v
    if origin is tuple:
        item_tps = args[:1] if len(args) == 2 and args[1] is Ellipsis else args
        if all(_value_encoder(a) is None for a in item_tps):
            return None  # msgpack packs a tuple as the array a list would be
        if len(args) == 2 and args[1] is Ellipsis:
            ie = _value_encoder(args[0])
            assert ie is not None
            if ie is _encode_nested:  # one message class: its encoder directly
                item_cls = args[0]

                def var_items(v: Any) -> list[Any]:
                    enc = _encoder_for(item_cls)
                    return [enc(x) if type(x) is item_cls else _encode_nested(x) for x in v]

                return var_items
            return lambda v: [ie(x) for x in v]
        ies = [_value_encoder(a) or (lambda x: x) for a in args]
        return lambda v: [f(x) for f, x in zip(ies, v, strict=True)]
    if origin is dict:
        ke, ve = (_value_encoder(a) for a in args)
        if ke is None and ve is None:
            return None
        kf = ke or (lambda x: x)
        vf = ve or (lambda x: x)
        return lambda v: {kf(k): vf(x) for k, x in v.items()}
    # An IntEnum is an int subclass, which msgpack packs as that int: native too.
    return None


def _encode_nested(v: Any) -> list[Any]:
    return _encoder_for(type(v))(v)


def _decoder_for(cls: type[Any]) -> _Decoder:
    dec = _DECODERS.get(cls)
    if dec is None:
        dec = _DECODERS[cls] = _compile_decoder(cls)
    return dec


def _frame_decoder_for(tag: Any) -> _Decoder:
    """The whole-frame decoder of the class registered under ``tag`` (compiled on first
    use); ``ProtocolError`` for anything but a known tag."""
    if type(tag) is not int:
        raise ProtocolError("frame: tag must be an int")
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise ProtocolError(f"frame: unknown message tag {tag}")
    dec = _FRAME_DECODERS[tag] = _compile_decoder(cls, frame=True)
    return dec


def _compile_decoder(cls: type[Any], *, frame: bool = False) -> _Decoder:
    """Generate ``cls``'s decoder: the arity check, an inline ``type(v) is T`` check per
    field of an exact primitive type and an inline member lookup per ``IntEnum`` field
    (the hot path of every frame), the compiled decoders of the other fields, then the
    object. A class without ``__post_init__`` is built by setting its slots directly,
    which is what its frozen ``__init__`` does, only without that ``__init__``'s
    per-field ``object.__setattr__`` detour. ``frame``: the decoder takes the whole frame
    ``[version, tag, field...]`` (whose header :func:`decode` checked), so the fields
    need not be sliced out of it first; else a nested ``[tag, field...]``."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    name = cls.__name__
    header = 2 if frame else 1
    n = len(fields) + header

    def arity(raw: list[Any]) -> ProtocolError:
        return ProtocolError(f"{name}: expected {n - header} fields, got {len(raw) - header}")

    def bad(i: int, tp: type[Any], v: Any) -> ProtocolError:
        return ProtocolError(
            f"{name}.{fields[i].name}: expected {tp.__name__}, got {type(v).__name__}"
        )

    def bad_enum(i: int, tp: type[Any], v: Any) -> ProtocolError:
        where = f"{name}.{fields[i].name}"
        if type(v) is not int:
            return ProtocolError(f"{where}: expected {tp.__name__}")
        return ProtocolError(f"{where}: bad {tp.__name__} value {v}")

    def invalid(exc: Exception) -> ProtocolError:
        return ProtocolError(f"{name}: {exc}")

    namespace: dict[str, Any] = {
        "_cls": cls,
        "_new": object.__new__,
        "_arity": arity,
        "_bad": bad,
        "_bad_enum": bad_enum,
        "_invalid": invalid,
    }
    names = [f"v{i}" for i in range(len(fields))]
    lines = [
        "def dec(raw):",
        f"    if len(raw) != {n}:",
        "        raw = _fit(raw)" if cls in _EXTENSIBLE else "        raise _arity(raw)",
    ]
    if cls in _EXTENSIBLE:
        namespace["_fit"] = _fitter(hints, fields, header, arity)
    if names:
        lines.append(f"    {'_, ' * header}{', '.join(names)} = raw")
    for i, f in enumerate(fields):
        tp = _primitive(hints[f.name])
        if tp is not None:
            namespace[f"_t{i}"] = tp
            lines += [f"    if type(v{i}) is not _t{i}:", f"        raise _bad({i}, _t{i}, v{i})"]
        elif isinstance(hints[f.name], type) and issubclass(hints[f.name], enum.IntEnum):
            namespace[f"_t{i}"] = hints[f.name]
            namespace[f"_m{i}"] = {int(m): m for m in hints[f.name]}
            lines += [
                f"    e = _m{i}.get(v{i}) if type(v{i}) is int else None",
                "    if e is None:",
                f"        raise _bad_enum({i}, _t{i}, v{i})",
                f"    v{i} = e",
            ]
        else:
            namespace[f"_d{i}"] = _value_decoder(hints[f.name], f"{name}.{f.name}")
            lines.append(f"    v{i} = _d{i}(v{i})")
    slots = [cls.__dict__.get(f.name) for f in fields]
    direct = (
        not hasattr(cls, "__post_init__")
        and all(f.init for f in fields)
        and all(type(d).__name__ == "member_descriptor" for d in slots)
    )
    if direct:
        lines.append("    o = _new(_cls)")
        for i, d in enumerate(slots):
            namespace[f"_s{i}"] = d.__set__  # type: ignore[union-attr]
            lines.append(f"    _s{i}(o, v{i})")
        lines.append("    return o")
    else:
        lines += [
            "    try:",
            f"        return _cls({', '.join(names)})",
            "    except (TypeError, ValueError) as exc:  # __post_init__ validation",
            "        raise _invalid(exc) from None",
        ]
    exec("\n".join(lines) + "\n", namespace)  # every name here is generated above
    return namespace["dec"]  # type: ignore[no-any-return]


def _fitter(
    hints: dict[str, Any],
    fields: tuple[dataclasses.Field[Any], ...],
    header: int,
    arity: Callable[[list[Any]], ProtocolError],
) -> Callable[[list[Any]], list[Any]]:
    """For an ``extensible`` class: make a raw array of another field count the known
    shape (extra fields dropped; missing defaulted trailing fields filled with their
    defaults as the wire would carry them); too few fields is still an error."""
    optional = [
        f
        for f in fields
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    required = header + len(fields) - len(optional)
    known = header + len(fields)
    defaults = []
    for f in optional:
        factory: Any = f.default_factory
        value = f.default if f.default is not dataclasses.MISSING else factory()
        enc = _value_encoder(hints[f.name])
        native = enc(value) if enc is not None else value
        defaults.append(_unpackb(_packb(native), raw=False, strict_map_key=False, use_list=True))

    def fit(raw: list[Any]) -> list[Any]:
        if len(raw) > known:
            return raw[:known]
        if len(raw) < required:
            raise arity(raw)
        return raw + defaults[len(raw) - required :]

    return fit


def _primitive(tp: Any) -> type[Any] | None:
    """The exact type a field must have on the wire, if it is a plain primitive."""
    while getattr(tp, "__supertype__", None) is not None:  # NewType
        tp = tp.__supertype__
    return tp if tp in (int, str, bytes, bool) else None


def _value_decoder(tp: Any, where: str) -> _Decoder:
    supertype = getattr(tp, "__supertype__", None)
    if supertype is not None:  # NewType
        return _value_decoder(supertype, where)
    if tp is Any or tp is object:
        return lambda v: v
    if tp is type(None) or tp is None:
        return _exact(type(None), where)
    if tp is bool:
        return _exact(bool, where)
    if tp is int:
        return _exact(int, where)
    if tp is float:

        def as_float(v: Any) -> float:
            if type(v) is float:
                return v
            if type(v) is int:
                return float(v)
            raise ProtocolError(f"{where}: expected float, got {type(v).__name__}")

        return as_float
    if tp is str:
        return _exact(str, where)
    if tp is bytes:
        return _exact(bytes, where)
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        enum_cls = tp
        members = {int(m): m for m in enum_cls}

        def as_enum(v: Any) -> Any:
            if type(v) is not int:
                raise ProtocolError(f"{where}: expected {enum_cls.__name__}")
            m = members.get(v)
            if m is None:
                raise ProtocolError(f"{where}: bad {enum_cls.__name__} value {v}")
            return m

        return as_enum
    if isinstance(tp, type) and tp in _CLASSES:
        return _nested_decoder((tp,), where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        msg_args = tuple(a for a in args if isinstance(a, type) and a in _CLASSES)
        other = [a for a in args if a not in msg_args]
        other_decs = [_value_decoder(a, where) for a in other]
        nested = _nested_decoder(msg_args, where) if msg_args else None

        def as_union(v: Any) -> Any:
            if nested is not None and isinstance(v, list):
                return nested(v)
            for d in other_decs:
                try:
                    return d(v)
                except ProtocolError:
                    continue
            raise ProtocolError(f"{where}: {type(v).__name__} matches none of {tp}")

        return as_union
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _CLASSES:
            return _message_tuple_decoder(args[0], where)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _value_decoder(args[0], where)

            def as_var_tuple(v: Any) -> tuple[Any, ...]:
                if not isinstance(v, list):
                    raise ProtocolError(f"{where}: expected array")
                return tuple([item(x) for x in v])

            return as_var_tuple
        items = [_value_decoder(a, where) for a in args]

        def as_fixed_tuple(v: Any) -> tuple[Any, ...]:
            if not isinstance(v, list) or len(v) != len(items):
                raise ProtocolError(f"{where}: expected array of {len(items)}")
            return tuple(d(x) for d, x in zip(items, v, strict=True))

        return as_fixed_tuple
    if origin is dict:
        kd, vd = (_value_decoder(a, where) for a in args)

        def as_dict(v: Any) -> dict[Any, Any]:
            if not isinstance(v, dict):
                raise ProtocolError(f"{where}: expected map")
            return {kd(k): vd(x) for k, x in v.items()}

        return as_dict
    raise TypeError(f"{where}: unsupported field type {tp!r}")


def _nested_decoder(allowed: tuple[type[Any], ...], where: str) -> _Decoder:
    def as_msg(v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ProtocolError(f"{where}: expected a nested message")
        return _decode_tagged(v, where, allowed)

    if len(allowed) != 1:
        return as_msg
    only = allowed[0]
    tag = only.TAG

    def as_one(v: Any) -> Any:
        # The usual case (a list tagged as the one allowed class) straight to its decoder.
        if type(v) is list and v and type(v[0]) is int and v[0] == tag:
            dec = _DECODERS.get(only)
            return (dec or _decoder_for(only))(v)
        return as_msg(v)

    return as_one


def _message_tuple_decoder(only: type[Any], where: str) -> _Decoder:
    """``tuple[M, ...]`` of one message class (e.g. an AppendEntries' entries): each
    item tagged as ``M`` goes straight to ``M``'s decoder, without a call per item to
    check it; anything else takes the checking path (and fails there)."""
    tag = only.TAG
    checked = _nested_decoder((only,), where)

    def as_msg_tuple(v: Any) -> tuple[Any, ...]:
        if type(v) is not list:
            raise ProtocolError(f"{where}: expected array")
        dec = _DECODERS.get(only) or _decoder_for(only)
        return tuple(
            [
                dec(x)
                if type(x) is list and x and x[0] == tag and type(x[0]) is int
                else checked(x)
                for x in v
            ]
        )

    return as_msg_tuple


def _exact(tp: type[Any], where: str) -> _Decoder:
    def check(v: Any) -> Any:
        if type(v) is not tp:
            raise ProtocolError(f"{where}: expected {tp.__name__}, got {type(v).__name__}")
        return v

    return check
