"""Never lose or fake data: output checks, atomic writes, source fingerprints, run locks, safe text.

The rules every writer follows (docs/safety.md):

- an output is never a source, never contains one and never lies inside one (paths compared after
  resolving symbolic links), so no run can delete or scribble over the slide, mask or model it reads;
- everything is checked before anything is written or removed;
- a file is written to a temporary sibling and renamed over the target (``os.replace`` is atomic);
  a folder is built as a sibling, the old one is moved aside, the new one renamed in, and only then is
  the old one deleted: at every instant either the old or the new result exists;
- an existing file or store is only replaced when asked (``--overwrite``), and a regular file, a link
  or a folder that is not a store is never replaced by a store;
- a resumed store must come from the same source: the store records a fingerprint (level shapes,
  factors, dtype, channels and a hash of a few fixed windows of the coarsest level) and resuming on a
  slide with another fingerprint is refused;
- one run at a time writes a store: ``.muvit/lock`` holds the writer's pid and host; a lock whose
  process is gone (same host) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np

LOCK_NAME = "lock"
FINGERPRINT_WINDOW = 64  # px per side of each sampled window of the coarsest level
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # keeps \t and \n
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---- where outputs may go --------------------------------------------------------------------------
def _resolved(path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value) not in ("", "demo")


def check_output_path(out, sources, what: str = "output") -> Path:
    """Refuse an output that is, contains or lies inside any of ``sources`` (symbolic links resolved).

    ``sources``: paths the command reads (slide, mask, model folder, labels); non-paths (arrays, None,
    ``"demo"``) are skipped. Returns ``Path(out)``.
    """
    if not _is_path(out):
        raise ValueError(f"no {what} path was given; pass a file or folder name.")
    target = _resolved(out)
    for src in sources if isinstance(sources, (list, tuple, set)) else [sources]:
        if not _is_path(src):
            continue
        s = _resolved(src)
        if target == s:
            relation = "is"
        elif s in target.parents:
            relation = "lies inside"
        elif target in s.parents:
            relation = "contains"
        else:
            continue
        raise ValueError(
            f"{what} {str(out)!r} {relation} the input {str(src)!r}, which would destroy it; "
            "choose an output outside every input."
        )
    return Path(out)


def check_new_file(path, overwrite: bool, what: str = "file", flag: str = "--overwrite") -> Path:
    """A file output: refuse an existing one unless ``overwrite``; never replace a folder or a link."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{what} {str(path)!r} is a symbolic link; write to a plain file path instead.")
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what} {str(path)!r} already exists; pass {flag} to replace it or choose another name.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"the folder {str(parent)!r} for {what} {str(path)!r} does not exist; create it first.")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"the folder {str(parent)!r} is not writable, so {what} {str(path)!r} cannot be written.")
    return path


def check_store_target(path, resume: bool, overwrite: bool) -> bool:
    """Checks for a store output, removing nothing; returns True when an existing store is resumed.

    Refused: an existing output without ``resume``/``overwrite``; resuming something that is not a
    prediction store; replacing a regular file, a symbolic link or a folder that is not a zarr store;
    an output whose parent folder is missing or not writable.
    """
    path = Path(path)
    if not str(path):
        raise ValueError("no output path was given; pass --out OUT.zarr.")
    if path.is_symlink():
        raise ValueError(f"output {str(path)!r} is a symbolic link; give the real path of the store instead.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"the folder {str(parent)!r} for output {str(path)!r} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"the folder {str(parent)!r} is not writable, so output {str(path)!r} cannot be created there.")
    if not path.exists():
        return False
    if resume:
        if not (path / "zarr.json").is_file() or not (path / ".muvit").is_dir():
            raise ValueError(f"output {str(path)!r} exists but is not a napari-muvit prediction store; it cannot be resumed.")
        return True
    if not overwrite:
        raise FileExistsError(
            f"output {str(path)!r} already exists; pass --resume to continue it or --overwrite to replace it."
        )
    if not path.is_dir():
        raise ValueError(f"output {str(path)!r} is a file, not a zarr store; --overwrite only replaces stores.")
    looks_like_zarr = any((path / n).is_file() for n in ("zarr.json", ".zgroup", ".zattrs", ".zarray"))
    if not looks_like_zarr and any(path.iterdir()):
        raise ValueError(f"output {str(path)!r} is a non-empty folder that is not a zarr store; refusing to delete it.")
    if looks_like_zarr and not is_muvit_store(path):
        raise ValueError(f"output {str(path)!r} is a zarr store that napari-muvit did not write (a slide or another "
                         "tool's data); --overwrite only replaces napari-muvit outputs, so choose another name.")
    return False


def is_muvit_store(path) -> bool:
    """Whether folder ``path`` is an output napari-muvit wrote: its run folder ``.muvit/`` or its
    ``napari_muvit`` metadata (zarr v3 ``zarr.json`` attributes or zarr v2 ``.zattrs``)."""
    import json

    path = Path(path)
    if (path / ".muvit").is_dir():
        return True
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            meta = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = meta.get(key, {}) if key else meta
        if isinstance(attrs, dict) and "napari_muvit" in attrs:
            return True
    return False


# ---- atomic writes ---------------------------------------------------------------------------------
def _sibling(path: Path, tag: str) -> Path:
    """A hidden name in the same folder (same file system: renames are atomic) keeping the suffix."""
    return path.with_name(f".{path.stem}.{tag}-{os.getpid()}-{os.urandom(4).hex()}{path.suffix}")


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary sibling path to write; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def replacing(path):
    """Around the creation of folder ``path``: an existing one is moved aside first, restored if the
    block fails (after removing what the block left, so a failed creation leaves nothing behind) and
    deleted only once the block has succeeded."""
    path = Path(path)
    aside = None
    if path.exists() and not path.is_symlink():
        aside = _sibling(path, "replaced")
        os.replace(path, aside)
    try:
        yield path
    except BaseException:  # remove the half-made result (it did not exist before), put the old one back
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
        if aside is not None:
            os.replace(aside, path)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True) if aside.is_dir() else aside.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary sibling folder path to build; it becomes ``path`` only if the block succeeds
    (an existing ``path`` is deleted after the swap), and is removed if the block fails."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        swap_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def swap_folder(new, path) -> Path:
    """Move the finished folder ``new`` to ``path``; an old ``path`` is deleted only after the swap."""
    new, path = Path(new), Path(path)
    with replacing(path):
        os.replace(new, path)
    return path


# ---- source fingerprint ----------------------------------------------------------------------------
def _windows(shape_yx, size=FINGERPRINT_WINDOW):
    """Five fixed windows (corners and centre) of a level, each ``size`` px a side (clipped)."""
    h, w = shape_yx
    ys = sorted({0, max(0, (h - size) // 2), max(0, h - size)})
    xs = sorted({0, max(0, (w - size) // 2), max(0, w - size)})
    picks = [(ys[0], xs[0]), (ys[0], xs[-1]), (ys[len(ys) // 2], xs[len(xs) // 2]), (ys[-1], xs[0]), (ys[-1], xs[-1])]
    return [(y, min(y + size, h), x, min(x + size, w)) for y, x in dict.fromkeys(picks)]


def source_fingerprint(pyramid) -> dict:
    """What identifies a slide without reading it all: level shapes, factors, dtype, channels and a
    sha256 of five fixed ``64 x 64`` windows of the coarsest level (reads at most ~20k pixels per channel)."""
    arrays = list(pyramid.arrays)
    top = arrays[-1]
    h = hashlib.sha256()
    for y0, y1, x0, x1 in _windows(tuple(top.shape[-2:])):
        index = (slice(None),) * (top.ndim - 2) + (slice(y0, y1), slice(x0, x1))
        window = top[index]
        if hasattr(window, "compute"):  # in this process, even when a dask client is the default scheduler
            from dask.local import get_sync  # the function, not its name: naming it imports dask.distributed

            window = window.compute(scheduler=get_sync)
        block = np.ascontiguousarray(np.asarray(window))
        h.update(np.asarray(block.shape, np.int64).tobytes())
        h.update(block.tobytes())
    return {
        "level_shapes": [[int(v) for v in a.shape] for a in arrays],
        "factors": [[int(v) for v in f] for f in pyramid.factors],
        "dtype": str(np.dtype(pyramid.dtype)),
        "channels": int(pyramid.n_channels),
        "sample_sha256": h.hexdigest()[:32],
    }


def check_fingerprint(stored: dict | None, pyramid, out) -> None:
    """Refuse to resume ``out`` on a slide whose fingerprint differs from the one the store recorded."""
    if not stored:
        return  # a store written before fingerprints were recorded
    now = source_fingerprint(pyramid)
    labels = {"level_shapes": "level shapes", "factors": "level factors", "dtype": "data type",
              "channels": "channel count", "sample_sha256": "pixel content"}
    for key, label in labels.items():
        if key in stored and stored[key] != now[key]:
            raise ValueError(
                f"output {str(out)!r} was started on a different slide (its {label} differ); "
                "resume with the original slide or write to a new output."
            )


# ---- files read back on resume ---------------------------------------------------------------------
def check_npy_file(path, what: str = "file") -> Path:
    """Refuse a ``.npy`` file that is unreadable or holds Python objects (pickles), naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; give the path of an existing file.") from None
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise ValueError(f"{what} {str(path)!r} is not a readable .npy array ({_short(exc)}).") from None
    if dtype.hasobject:
        raise ValueError(f"{what} {str(path)!r} holds pickled Python objects, which are refused; save plain numbers.")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if path.stat().st_size < expected:
        raise ValueError(f"{what} {str(path)!r} is truncated ({path.stat().st_size} of {expected} bytes).")
    return path


def check_resumable(store_path) -> None:
    """Before resuming: the store's metadata, run state and scratch predictions must be intact."""
    import json
    import zipfile

    store_path = Path(store_path)
    meta = store_path / "zarr.json"
    try:
        json.loads(meta.read_text())
    except (ValueError, OSError) as exc:
        raise ValueError(f"the store metadata {str(meta)!r} is damaged ({_short(exc)}); "
                         "run again with --overwrite to start over.") from None
    state = store_path / ".muvit" / "state.npz"
    if state.exists():
        if not zipfile.is_zipfile(state):
            raise ValueError(f"the run state {str(state)!r} is damaged (not an .npz archive); "
                             "run again with --overwrite to start over.")
        try:
            with np.load(state, allow_pickle=False) as z:
                for name in z.files:
                    z[name]
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"the run state {str(state)!r} is damaged ({_short(exc)}); "
                             "run again with --overwrite to start over.") from None
    for scratch in sorted((store_path / ".muvit" / "scratch").glob("*.npy")):
        try:
            check_npy_file(scratch, "scratch prediction")
        except ValueError as exc:
            raise ValueError(f"{str(exc).rstrip('.')}; delete it (its tile is predicted again) and resume.") from None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0].strip().rstrip(".") if str(exc).strip() else ""
    return text or type(exc).__name__


# ---- one writer per store --------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def acquire_lock(store_path) -> Path:
    """Take ``store/.muvit/lock`` (pid and host); refuse while another live process holds it.

    A lock left by a process that is gone (same host) or by this very process is taken over.
    """
    lock = Path(store_path) / ".muvit" / LOCK_NAME
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host = _read_lock(lock)
            own_host = host in (None, socket.gethostname())
            if pid is None or pid == os.getpid() and own_host or own_host and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its process is gone
                continue
            raise ValueError(
                f"output {str(store_path)!r} is being written by another run (process {pid} on {host}); "
                f"wait for it to finish, or delete {str(lock)!r} if that run is gone."
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        return lock
    raise ValueError(f"could not take the lock {str(lock)!r}; another run keeps taking it.")


def release_lock(store_path) -> None:
    """Remove the store's lock if this process holds it."""
    lock = Path(store_path) / ".muvit" / LOCK_NAME
    pid, _ = _read_lock(lock)
    if pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _read_lock(lock: Path) -> tuple[int | None, str | None]:
    try:
        parts = lock.read_text().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (FileNotFoundError, ValueError, IndexError, OSError):
        return None, None


# ---- a cluster that is not there -------------------------------------------------------------------
def check_scheduler_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``tcp://``/``tls://`` (or bare ``host:port``) dask scheduler that accepts no connection, before
    any output is created; other schemes are left to dask."""
    from urllib.parse import urlsplit

    text = str(address)
    parts = urlsplit(text if "://" in text else f"tcp://{text}")
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ValueError(f"dask scheduler address {text!r} needs a host and a port, e.g. tcp://head-node:8786.")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ValueError(f"cannot reach the dask scheduler {text!r} ({_short(exc)}); check the address and that "
                         "the scheduler is running.") from None


# ---- text that leaves the program ------------------------------------------------------------------
def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: strings starting with = + - @ (formulas) get a leading '."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
            return value  # a negative number stays a number
        except ValueError:
            return "'" + value
    return value


def terminal_text(text) -> str:
    """``text`` without control characters (escape sequences, bidi overrides) that would drive a terminal."""
    return _CONTROL.sub("?", str(text))


def os_error_sentence(exc: OSError) -> str:
    """One sentence for an operating-system error while reading or writing files."""
    where = f" {str(exc.filename)!r}" if exc.filename else ""
    writing = f" while writing{where}" if where else ""
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{writing}; free space and run again with --resume to finish."
    if exc.errno == errno.EFBIG:
        return f"a file grew past the file-size limit{writing}; raise the limit and run again with --resume."
    if exc.errno == errno.EDQUOT:
        return f"the disk quota is exhausted{writing}; free space and run again with --resume."
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied for{where or ' a file'}; choose a location you can write to."
    if exc.errno == errno.EROFS:
        return f"{where.strip() or 'the output'} is on a read-only file system; choose another location."
    reason = exc.strerror or type(exc).__name__
    return f"{reason.rstrip('.')}{':' if where else ''}{where}."
