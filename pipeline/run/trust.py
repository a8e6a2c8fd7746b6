"""Nothing in a run directory runs code unless the user trusts it.

A run directory may come from anyone (DESIGN.md, section 5), and two of its formats can run
code when read: a pickle (unpickling calls whatever the file names) and a gin file (`import`
and dynamic registration bind any callable). So:

- What the pipeline saves is plain data where it can be: `dumps`/`save` write nested dicts,
  lists, tuples, TimeSteps, numbers, strings, bytes and NumPy arrays (no object arrays) as
  JSON plus raw buffers, and reading them builds nothing but those types.
- What has no other form (a whole gymnasium env) goes in as `Pickled` bytes, signed with
  HMAC-SHA256 under a per-user secret. Reading hands a `Pickled` back only when its signature
  is this user's; a checksum (MANIFEST.json) cannot do that, since whoever wrote the directory
  can recompute it.
- A run's config.gin is read as settings only (`check_run_config`).
- `--trust_run_dir` (`run_dir_trusted`) lifts both checks for a directory the user vouches for.

The secret is a file created on first use with mode 0600: `$PIPELINE_SECRET_FILE`, else
`$XDG_CONFIG_HOME/tfa-pipeline/secret` (`~/.config/...`). Clusters whose nodes share no home
point PIPELINE_SECRET_FILE at a copy of one file on every node, or at a shared path.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags, logging

from pipeline.errors import UserError
from pipeline.run.files import fsync_path

SECRET_ENV = "PIPELINE_SECRET_FILE"
TRUST_FLAG = "trust_run_dir"
_MAGIC = b"tfa-pipeline state v1\n"
_MAC_CONTEXT = b"tfa-pipeline signed pickle v1\0"
_MIN_SECRET_BYTES = 16
_PLAIN_KINDS = "biufcSU"  # bool, ints, floats, complex, byte and text strings: never objects
_keys: dict[str, bytes] = {}
_trusted: bool | None = None


class Pickled(bytes):
    """Bytes that are a pickle: signed when saved, handed back by `loads` only when the
    signature is this user's (or the run directory is trusted), so that unpickling one is
    safe. Only the code that pickled, or `loads`, makes one."""


class UntrustedPickle(ValueError):
    """Saved data holds a pickle that this user did not sign."""


# --- the trust switch ------------------------------------------------------------------


def set_trusted(value: bool | None) -> None:
    """Overrides --trust_run_dir in this process (None: the flag decides again); for tests
    and callers without absl flags."""
    global _trusted
    _trusted = value


def run_dir_trusted() -> bool:
    """Whether the user vouched for the run directory (--trust_run_dir)."""
    if _trusted is not None:
        return _trusted
    values = flags.FLAGS
    return TRUST_FLAG in values and values.is_parsed() and bool(values[TRUST_FLAG].value)


# --- the secret ------------------------------------------------------------------------


def secret_file() -> Path:
    """Where this user's signing secret lives (see the module docstring)."""
    if os.environ.get(SECRET_ENV):
        return Path(os.environ[SECRET_ENV]).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "tfa-pipeline" / "secret"


def _create_secret(path: Path) -> None:
    """Writes a new secret unless one exists; two processes racing end with one secret.

    The secret is written complete into a private temporary file and hard-linked into
    place, which fails if the name exists: the loser reads the winner's secret.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            with os.fdopen(fd, "wb") as f:
                f.write(tmp.read_bytes())
                f.flush()
                os.fsync(f.fileno())
        fsync_path(path.parent)
        logging.info("created the secret that signs checkpoints' pickles: %s", path)
    finally:
        tmp.unlink(missing_ok=True)


def _key(create: bool) -> bytes | None:
    """This user's secret (None if there is none and `create` is False)."""
    path = secret_file()
    cached = _keys.get(str(path))
    if cached is not None:
        return cached
    if create and not path.exists():
        try:
            _create_secret(path)
        except OSError as error:
            raise UserError(
                f"cannot create the signing secret {path} ({error.strerror}): set {SECRET_ENV} "
                "to a file you can write"
            ) from None
    for _ in range(50):  # a writer without hard links may not have finished its write
        try:
            key = path.read_bytes().strip()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise UserError(
                f"the signing secret {path} cannot be read ({error.strerror}): fix it, or set "
                f"{SECRET_ENV} to another file"
            ) from None
        if len(key) >= _MIN_SECRET_BYTES:
            break
        time.sleep(0.01)
    else:
        raise UserError(
            f"the signing secret {path} is shorter than {_MIN_SECRET_BYTES} bytes: delete it "
            f"(a new one is made), or set {SECRET_ENV} to another file"
        )
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        logging.warning(
            "the signing secret %s is readable by others, who could sign pickles you would "
            "load: chmod 600 %s",
            path,
            path,
        )
    _keys[str(path)] = key
    return key


def sign(blob: bytes) -> str:
    """HMAC-SHA256 of `blob` under this user's secret (created on first use), in hex."""
    return hmac.new(_key(create=True), _MAC_CONTEXT + blob, hashlib.sha256).hexdigest()


def signature_problem(blob: bytes, mac: str | None) -> str | None:
    """None if `mac` is this user's signature of `blob`, else why not (for a warning)."""
    if not mac:
        return "a pickle without a signature (written before pickles were signed, or by a tool)"
    key = _key(create=False)
    if key is None:
        return f"a signed pickle, but this user has no secret ({secret_file()})"
    expected = hmac.new(key, _MAC_CONTEXT + blob, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(mac)):
        return f"a pickle signed by another user's secret, or altered (yours: {secret_file()})"
    return None


# --- plain data ------------------------------------------------------------------------


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


# --- exported policies ------------------------------------------------------------------

EXPORT_SIGNATURE = "SIGNATURE"  # in each export folder: this user's HMAC of its files
_EXPORT_CONTEXT = b"tfa-pipeline exported policy v1\0"


def _export_digest(folder: Path) -> bytes:
    """Every file's path and SHA-256 under `folder`, in order: what a signature covers. A
    link inside an export is refused: the pipeline's exports hold none."""
    lines = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"{path.relative_to(folder)} is a link")
        if path.is_file() and path.name != EXPORT_SIGNATURE:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            lines.append(f"{path.relative_to(folder).as_posix()}\0{digest}\n")
    return "".join(lines).encode()


def sign_export(folder: Path) -> None:
    """Signs a SavedModel the pipeline just wrote: loading one runs its TensorFlow graph, so
    `pipeline.evaluate` plays only exports of this user's (or a trusted run's)."""
    mac = hmac.new(_key(create=True), _EXPORT_CONTEXT + _export_digest(folder), hashlib.sha256)
    (folder / EXPORT_SIGNATURE).write_text(mac.hexdigest() + "\n")


def export_problem(folder: Path) -> str | None:
    """None if `folder` is an export this user signed, else why not (for the error line)."""
    folder = Path(folder).resolve()
    try:
        mac = (folder / EXPORT_SIGNATURE).read_text().strip()
    except OSError:
        return "it has no signature (exported by someone else, or before exports were signed)"
    key = _key(create=False)
    if key is None:
        return f"it is signed, but this user has no secret ({secret_file()})"
    try:
        digest = _export_digest(folder)
    except ValueError as error:
        return str(error)
    expected = hmac.new(key, _EXPORT_CONTEXT + digest, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        return "its signature is another user's, or its files were altered"
    return None


# --- a run's config.gin ------------------------------------------------------------------


class _NoLookups:
    """Gin's parser asks its delegate to resolve `@name` and `%MACRO`: here, nothing is."""

    def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> str:
        return scoped_configurable_name

    def macro(self, macro_name: str) -> str:
        return macro_name


def check_run_config(path: Path) -> None:
    """Refuses a run's config.gin that would run code when gin parses it: an `import` (it
    runs the module; `from __gin__ import dynamic_registration` then lets a binding call any
    of its functions) or an `include` (of a file that may import). The pipeline writes
    config.gin with `gin.config_str()`, which holds neither for the repository's gin files;
    a user's own gin file with `import` makes their run need --trust_run_dir."""
    from gin import config_parser

    code = (config_parser.ImportStatement, config_parser.IncludeStatement)
    text = Path(path).read_text(encoding="utf-8")
    hint = f"pass --trust_run_dir if you trust who wrote {Path(path).parent}"
    try:
        for statement in config_parser.ConfigParser(text, _NoLookups()):
            if isinstance(statement, code):
                where = f"{path}, line {statement.location.line_num}"
                what = statement.location.line_content.strip()
                raise UserError(
                    f"{where}: {what!r} would run code when read (a run's config.gin holds "
                    f"settings only): {hint}"
                )
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - gin would fail too, maybe after an import
        first = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise UserError(f"{path} is not a config.gin gin can read ({first}): {hint}") from None
