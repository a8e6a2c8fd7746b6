"""Saved state as plain data: what a checkpoint holds besides TF's own files.

Reading a pickle runs whatever it names, so the training envs' states, their last time step
and the on-policy carry are written as nested dicts, lists, tuples, TimeSteps, numbers,
strings, bytes and NumPy arrays (no object arrays): JSON for the structure plus raw buffers,
and reading builds nothing but those types. The one thing with no other form, a whole
gymnasium env, goes in as `Pickled` bytes, signed when written and handed back by reading
only when the signature is this user's (`pipeline.run.trust`), or the run is trusted.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.run.trust import sign, signature_problem

_MAGIC = b"tfa-pipeline state v1\n"
_PLAIN_KINDS = "biufcSU"  # bool, ints, floats, complex, byte and text strings: never objects


class Pickled(bytes):
    """Bytes that are a pickle: signed when saved, handed back by `loads` only when the
    signature is this user's (or the run directory is trusted), so that unpickling one is
    safe. Only the code that pickled, or `loads`, makes one."""


class UntrustedPickle(ValueError):
    """Saved data holds a pickle that this user did not sign."""


def _namedtuples() -> dict[str, type]:
    """The named tuples plain data may hold (imported late: TF-Agents brings TensorFlow)."""
    from tf_agents.trajectories.time_step import TimeStep

    return {"TimeStep": TimeStep}


def _encode(value: Any, buffers: list[np.ndarray]) -> Any:
    """`value` as JSON, its arrays, bytes and pickles appended to `buffers`."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Pickled):
        buffers.append(np.frombuffer(value, dtype=np.uint8))
        return {"pickle": len(buffers) - 1, "hmac": sign(value)}
    if isinstance(value, bytes | bytearray):
        buffers.append(np.frombuffer(bytes(value), dtype=np.uint8))
        return {"bytes": len(buffers) - 1}
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype.kind not in _PLAIN_KINDS:
            raise TypeError(f"an array of {array.dtype} cannot be saved as plain data")
        buffers.append(array)
        kind = "array" if isinstance(value, np.ndarray) else "scalar"
        return {kind: len(buffers) - 1, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        name = type(value).__name__
        if _namedtuples().get(name) is not type(value):
            raise TypeError(f"{type(value).__qualname__} cannot be saved as plain data")
        fields = {field: _encode(getattr(value, field), buffers) for field in value._fields}
        return {"namedtuple": name, "fields": fields}
    if isinstance(value, list | tuple):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, buffers) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("a dict with keys other than strings cannot be saved as plain data")
        return {"dict": {key: _encode(v, buffers) for key, v in value.items()}}
    raise TypeError(f"a {type(value).__qualname__} cannot be saved as plain data")


def _plain_dtype(text: str) -> np.dtype:
    dtype = np.dtype(str(text))
    if dtype.kind not in _PLAIN_KINDS:
        raise ValueError(f"dtype {text!r} is not plain data")
    return dtype


def _decode(node: Any, buffer, trusted: bool) -> Any:
    """Inverse of `_encode`; `buffer(i, dtype)` is the i-th buffer as a flat array."""
    if node is None or isinstance(node, bool | int | float | str):
        return node
    if not isinstance(node, dict) or len(node) == 0:
        raise ValueError(f"not plain data: {str(node)[:80]}")
    if "list" in node:
        return [_decode(v, buffer, trusted) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, buffer, trusted) for v in node["tuple"])
    if "dict" in node:
        return {str(key): _decode(v, buffer, trusted) for key, v in node["dict"].items()}
    if "namedtuple" in node:
        cls = _namedtuples().get(node["namedtuple"])
        if cls is None:
            raise ValueError(f"{node['namedtuple']!r} is not a named tuple plain data may hold")
        return cls(**{key: _decode(v, buffer, trusted) for key, v in node["fields"].items()})
    if "bytes" in node:
        return buffer(node["bytes"], np.dtype(np.uint8)).tobytes()
    if "pickle" in node:
        blob = buffer(node["pickle"], np.dtype(np.uint8)).tobytes()
        problem = signature_problem(blob, node.get("hmac"))
        if problem is not None and not trusted:
            raise UntrustedPickle(problem)
        return Pickled(blob)
    for kind in ("array", "scalar"):
        if kind in node:
            dtype = _plain_dtype(node["dtype"])
            shape = tuple(int(n) for n in node["shape"])
            array = buffer(node[kind], dtype).reshape(shape).copy()
            return array if kind == "array" else array[()]
    raise ValueError(f"not plain data: {str(node)[:80]}")


@contextlib.contextmanager
def _malformed_as_value_error():
    """Any malformation of saved plain data surfaces as one ValueError (an UntrustedPickle,
    itself a ValueError, passes as it is)."""
    try:
        yield
    except ValueError:
        raise
    except (TypeError, KeyError, AttributeError, IndexError, OverflowError) as error:
        raise ValueError(f"malformed plain data ({type(error).__name__}: {error})") from None


def _index(index: Any, count: int) -> int:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise ValueError(f"no buffer {index!r}")
    return index


def dumps(tree: Any) -> bytes:
    """`tree` as bytes, the same bytes for the same values; pickles in it are signed."""
    buffers: list[np.ndarray] = []
    header = json.dumps({"tree": _encode(tree, buffers), "sizes": [b.nbytes for b in buffers]})
    head = header.encode("utf-8")
    size = len(head).to_bytes(8, "little")
    return b"".join([_MAGIC, size, head, *(b.tobytes() for b in buffers)])


def loads(data: bytes, trusted: bool = False) -> Any:
    """`dumps`'s tree back; raises UntrustedPickle for a pickle this user did not sign
    (unless `trusted`) and ValueError for anything that is not `dumps`'s output."""
    data = bytes(data)
    if not data.startswith(_MAGIC):
        raise ValueError("not the pipeline's plain data (an older pickle?)")
    with _malformed_as_value_error():
        start = len(_MAGIC) + 8
        size = int.from_bytes(data[len(_MAGIC) : start], "little")
        header = json.loads(data[start : start + size].decode("utf-8"))
        sizes = [int(n) for n in header["sizes"]]
        offsets = np.cumsum([start + size, *sizes]).tolist()
        if min(sizes, default=0) < 0 or offsets[-1] != len(data):
            raise ValueError("truncated or padded plain data")

        def buffer(index: int, dtype: np.dtype) -> np.ndarray:
            index = _index(index, len(sizes))
            return np.frombuffer(data[offsets[index] : offsets[index + 1]], dtype=dtype)

        return _decode(header["tree"], buffer, trusted)


def save(path: Path, tree: Any) -> None:
    """`tree` as an .npz file (np.load reads it without pickle): its arrays under "0", "1",
    ..., its structure as JSON under "tree"; pickles in it are signed."""
    buffers: list[np.ndarray] = []
    header = json.dumps({"tree": _encode(tree, buffers)}).encode("utf-8")
    arrays = {str(i): array for i, array in enumerate(buffers)}
    stream = io.BytesIO()
    np.savez(stream, tree=np.frombuffer(header, dtype=np.uint8), **arrays)
    Path(path).write_bytes(stream.getvalue())


def load(path: Path, trusted: bool = False) -> Any:
    """`save`'s tree back, as `loads` does (np.load never unpickles here)."""
    with np.load(path, allow_pickle=False) as saved, _malformed_as_value_error():
        header = json.loads(saved["tree"].tobytes().decode("utf-8"))
        count = len(saved.files) - 1

        def buffer(index: int, dtype: np.dtype) -> np.ndarray:
            array = saved[str(_index(index, count))]
            if array.dtype != dtype:
                raise ValueError(f"entry {index} is {array.dtype}, not {dtype}")
            return array.reshape(-1)

        return _decode(header["tree"], buffer, trusted)
