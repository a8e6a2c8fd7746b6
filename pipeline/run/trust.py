"""Nothing in a run directory runs code unless the user trusts it.

A run directory may come from anyone (it is shared, downloaded, copied between clusters; see
docs/run-directory.md), and two of its formats can run code when read: a pickle (unpickling
calls whatever the file names) and a gin file (`import` and dynamic registration bind any
callable). So:

- What the pipeline saves is plain data where it can be (`pipeline.run.plain_data`); what
  has no other form (a whole gymnasium env) is a pickle signed here with HMAC-SHA256 under a
  per-user secret (`sign`, `signature_problem`), and read back only when the signature is
  this user's; a checksum (MANIFEST.json) cannot do that, since whoever wrote the directory
  can recompute it. Exported policies (SavedModels, whose graphs run when played) are signed
  the same way (`sign_export`, `export_problem`).
- A run's config.gin is read as settings only (`check_run_config`).
- `--trust_run_dir` (`run_dir_trusted`) lifts these checks for a directory the user vouches for.

The secret is a file created on first use with mode 0600: `$PIPELINE_SECRET_FILE`, else
`$XDG_CONFIG_HOME/tfa-pipeline/secret` (`~/.config/...`). Clusters whose nodes share no home
point PIPELINE_SECRET_FILE at a copy of one file on every node, or at a shared path.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from pathlib import Path

from absl import flags, logging

from pipeline.errors import UserError
from pipeline.run.files import fsync_path

SECRET_ENV = "PIPELINE_SECRET_FILE"
TRUST_FLAG = "trust_run_dir"
_MAC_CONTEXT = b"tfa-pipeline signed pickle v1\0"
_MIN_SECRET_BYTES = 16
_keys: dict[str, bytes] = {}
_trusted: bool | None = None


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
