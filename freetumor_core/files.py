"""File input and output that cannot leave half-written results or hang on odd inputs.

Single files go through :func:`atomic_output`: data go to a hidden temporary file in the target
folder, which is checked (not empty, a readable header for images, parseable JSON, a whole PNG) and
only then renamed over the target. Several files that belong together (a CT, its labels, their
records and snapshot) go through :func:`output_set`: every file is written into a hidden staging
folder inside the target folder, checked, and then committed with a journal, so that a process
killed between two renames is repaired (rolled forward) by the next run into that folder. A set
that never reached its journal is removed: the old files stay as they were.

Hidden leftovers (``.freetumor-tmp.*``, ``.freetumor-staging.*``) carry the id of the process that
made them; the next writer into the folder removes those whose process no longer runs.

Inputs go through :func:`check_input_file`, which refuses FIFOs, devices, sockets and symlink loops
before anything opens them.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError

TEMPORARY_PREFIX = ".freetumor-tmp."
STAGING_PREFIX = ".freetumor-staging."
JOURNAL = ".commit.json"
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".nhdr", ".mhd")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _default_mode() -> int:
    """The permissions ``open(path, "w")`` would give: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix


# -- inputs -------------------------------------------------------------------------------------
def check_input_file(path: str | os.PathLike[str], what: str = "file", folder_ok: bool = False) -> Path:
    """Refuse a path that is missing, a symlink loop, or not a regular file (FIFO, device, socket).

    Raises:
        InputError: naming the path and the problem.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{what} is a symlink loop", path) from None
        if os.path.islink(path):
            raise InputError(f"{what} is a broken symbolic link", path) from None
        if error.errno == errno.EACCES:
            raise InputError(f"{what} cannot be read (permission denied)", path) from None
        raise InputError(f"{what} not found", path) from None
    if stat.S_ISDIR(mode):
        if folder_ok:
            return path
        raise InputError(f"{what} must be a file, got a folder", path)
    if not stat.S_ISREG(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        raise InputError(f"{what} is a {kind}, not a regular file", path)
    return path


def read_small_text(path: str | os.PathLike[str], what: str, max_bytes: int = 16 << 20) -> str:
    """The UTF-8 text of a small file (a name map, a datalist), with every failure an InputError."""
    path = check_input_file(path, what)
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(
            f"{what} is {size} bytes; more than the {max_bytes} bytes such a file may hold", path
        )
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{what} is not UTF-8 text ({error.reason} at byte {error.start})", path) from None
    except OSError as error:
        raise InputError(f"cannot read {what}: {error.strerror}", path) from None


def parse_json(text: str, path: str | os.PathLike[str], what: str) -> Any:
    """``json.loads`` with every failure (nesting too deep included) an InputError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{what} is not valid JSON: {error}", path) from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply to be read", path) from None


def gzip_size(path: str | os.PathLike[str], limit_bytes: int | None = None) -> int:
    """The decompressed size of a gzip file, read in bounded chunks (memory stays small).

    Raises:
        InputError: corrupt or truncated data, or more than ``limit_bytes`` once decompressed.
    """
    path = Path(path)
    total = 0
    decompressor = zlib.decompressobj(wbits=31)
    with open(path, "rb") as handle:
        try:
            while chunk := handle.read(1 << 20):
                data = chunk
                while data:
                    total += len(decompressor.decompress(data, 1 << 24))
                    data = decompressor.unconsumed_tail
                    if limit_bytes is not None and total > limit_bytes:
                        raise InputError(
                            f"compressed data expand beyond the {limit_bytes} bytes the header allows",
                            path,
                        )
                    # Trailing bytes after one member can hold further gzip members.
                    if decompressor.eof and decompressor.unused_data:
                        data = decompressor.unused_data
                        decompressor = zlib.decompressobj(wbits=31)
        except zlib.error as error:
            raise InputError(f"corrupt gzip data: {error}", path) from None
    if not decompressor.eof:
        raise InputError("file is truncated (the compressed data end early)", path)
    return total


# -- checks of written files --------------------------------------------------------------------
def verify_output(
    path: str | os.PathLike[str], name: str | None = None, expected_bytes: int | None = None
) -> None:
    """Check a freshly written file before it takes its final name.

    Every file: exactly ``expected_bytes`` long when the writer knows its length, else not empty.
    Images (by the suffix of ``name``, default the path's): a header that
    SimpleITK reads back, and as many data bytes as that header needs (gzip streams decompressed to
    their end). JSON: parses. PNG: signature and end chunk.

    Raises:
        InputError: the file is incomplete (a full disk, usually); the message names ``name``.
    """
    path = Path(path)
    shown = Path(name) if name else path
    size = path.stat().st_size
    if expected_bytes is not None and size != expected_bytes:
        raise InputError(f"writing failed: {size} of {expected_bytes} bytes written (disk full?)", shown)
    if expected_bytes is None and size == 0:
        raise InputError("writing failed: the file is empty (disk full?)", shown)
    if size == 0:
        return
    lower = shown.name.lower()
    if lower.endswith(".json"):
        try:
            json.loads(path.read_bytes())
        except (ValueError, RecursionError):
            raise InputError("writing failed: the JSON file is incomplete (disk full?)", shown) from None
    elif lower.endswith(".png"):
        with open(path, "rb") as handle:
            head = handle.read(8)
            handle.seek(max(size - 12, 0))
            tail = handle.read(12)
        if head != PNG_SIGNATURE or b"IEND" not in tail:
            raise InputError("writing failed: the PNG file is incomplete (disk full?)", shown)
    elif lower.endswith(IMAGE_SUFFIXES):
        _verify_image(path, shown)


def _verify_image(path: Path, shown: Path) -> None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError("writing failed: the image header cannot be read back (disk full?)", shown) from None
    voxels = 1
    for n in reader.GetSize():
        voxels *= n
    data_bytes = voxels * reader.GetNumberOfComponents() * _bytes_per_component(reader.GetPixelID())
    lower = shown.name.lower()
    if lower.endswith(".gz"):
        try:
            expanded = gzip_size(path)
        except InputError:
            raise InputError("writing failed: the compressed data end early (disk full?)", shown) from None
        if expanded < data_bytes:
            raise InputError("writing failed: the image data are incomplete (disk full?)", shown)
    elif lower.endswith(".nii") and path.stat().st_size < data_bytes:
        raise InputError("writing failed: the image data are incomplete (disk full?)", shown)


def _bytes_per_component(pixel_id: int) -> int:
    import SimpleITK as sitk

    sizes = {
        sitk.sitkUInt8: 1,
        sitk.sitkInt8: 1,
        sitk.sitkUInt16: 2,
        sitk.sitkInt16: 2,
        sitk.sitkUInt32: 4,
        sitk.sitkInt32: 4,
        sitk.sitkUInt64: 8,
        sitk.sitkInt64: 8,
        sitk.sitkFloat32: 4,
        sitk.sitkFloat64: 8,
    }
    return sizes.get(pixel_id, 1)


# -- leftovers ----------------------------------------------------------------------------------
def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str, prefix: str) -> int | None:
    try:
        return int(name[len(prefix) :].split(".", 1)[0])
    except ValueError:
        return None


def clean_folder(folder: str | os.PathLike[str]) -> None:
    """Repair and tidy an output folder after a killed writer.

    A staging folder with a journal is committed (rolled forward); one without is removed, as are
    temporary files. Only leftovers of processes that no longer run are touched.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(STAGING_PREFIX):
            pid = _owner(entry.name, STAGING_PREFIX)
            if pid is not None and not _process_alive(pid):
                staging = Path(entry.path)
                if (staging / JOURNAL).is_file():
                    _commit(staging, folder)
                shutil.rmtree(staging, ignore_errors=True)
        elif entry.name.startswith(TEMPORARY_PREFIX):
            pid = _owner(entry.name, TEMPORARY_PREFIX)
            if pid is not None and not _process_alive(pid):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass


# -- single files -------------------------------------------------------------------------------
def check_output_folder(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and check that it is a writable folder.

    Raises:
        InputError: it is a file, lies below a file, or cannot be written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError("output folder is an existing file; give a folder", folder) from None
    except NotADirectoryError:
        raise InputError("output folder lies below a file; give a folder", folder) from None
    except OSError as error:
        raise InputError(f"cannot create the output folder: {error.strerror}", folder) from None
    if not folder.is_dir():
        raise InputError("output folder is an existing file; give a folder", folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError("output folder is not writable", folder)
    return folder


def refuse_input_folder(
    output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None]
) -> None:
    """Refuse an output folder that holds one of the inputs (its files would be overwritten).

    Raises:
        InputError: ``output`` is the folder of an input file (or the input folder itself).
    """
    target = Path(output).resolve()
    for source in inputs:
        if source is None:
            continue
        source = Path(source).resolve()
        if target in (source, source.parent):
            raise InputError(
                f"output folder holds the input {source.name}; its files would be overwritten: "
                "choose another folder",
                output,
            )


def _write_failed(error: OSError, path: Path) -> InputError:
    reason = "disk full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else error.strerror or str(error)
    return InputError(f"writing failed ({reason})", path)


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], mode: int | None = None, expected_bytes: int | None = None
) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` to write to; check it, then rename it over ``path``.

    The temporary name keeps the target's suffix (``.nii.gz``, ``.png``, ...), since some writers
    choose the format by it. The file is checked with :func:`verify_output` before the rename. On any
    error the temporary file is removed and the error re-raised (a failed write, a full disk among
    them, as :class:`InputError` naming ``path``). ``mode``: the file's permissions (default: those
    of an ordinary new file). ``expected_bytes``: the length the file must have, when known.
    """
    path = Path(path)
    folder = check_output_folder(path.parent)
    if path.is_dir():
        raise InputError("output file is an existing folder", path)
    clean_folder(folder)
    temporary = folder / f"{TEMPORARY_PREFIX}{os.getpid()}.{secrets.token_hex(4)}{_suffix(path)}"
    try:
        # Private while it is written (a key file must never be readable by others, even briefly).
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        raise _write_failed(error, path) from None
    try:
        yield temporary
        verify_output(temporary, str(path), expected_bytes)
        _sync(temporary)
        os.chmod(temporary, _default_mode() if mode is None else mode)
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        raise _write_failed(error, path) from None
    except BaseException:
        _remove(temporary)
        raise


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text(path: str | os.PathLike[str], text: str, mode: int | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (``mode``: permissions, e.g. ``0o600`` for a secret)."""
    data = text.encode("utf-8")
    with atomic_output(path, mode, expected_bytes=len(data)) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_json(
    path: str | os.PathLike[str], data: Any, indent: int | None = 1, mode: int | None = None
) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=indent), mode)


# -- sets of files ------------------------------------------------------------------------------
class StagedSet:
    """The files of one output set while they are written: ``staged.path("ct.nii.gz")`` is where a
    writer puts ``ct.nii.gz``. Every plain (not hidden) file in the staging folder is a member, so
    writers that add a sidecar (``labels.json`` beside ``labels.nii.gz``) need nothing more."""

    def __init__(self, folder: Path, staging: Path) -> None:
        self.folder = folder
        self.staging = staging

    def path(self, name: str) -> Path:
        """Where to write the member ``name`` (a plain file name, no folders)."""
        if Path(name).name != name or name.startswith("."):
            raise ValueError(f"an output set member is a plain file name, got {name!r}")
        return self.staging / name

    def final(self, staged_path: str | os.PathLike[str]) -> Path:
        """The path a staged member will have once the set is committed."""
        return self.folder / Path(staged_path).name

    def members(self) -> list[str]:
        return sorted(entry.name for entry in os.scandir(self.staging) if not entry.name.startswith("."))


@contextmanager
def output_set(folder: str | os.PathLike[str], replaces: Iterable[str] = ()) -> Iterator[StagedSet]:
    """Write several files that belong together; they take their final names as a whole.

    Example::

        with output_set("out", replaces=["snapshot.png"]) as staged:
            write_volume(ct, staged.path("ct.nii.gz"))
            write_json(staged.path("tumors.json"), records)

    Writers inside the block may use the atomic writers (they write into the staging folder). On
    leaving the block every member is checked (:func:`verify_output`), a journal is written, and the
    members are renamed into ``folder``; old files named in ``replaces`` that this set did not write
    are removed, so that no file of an older set stays beside the new one. On an error nothing in
    ``folder`` changes.

    Raises:
        InputError: ``folder`` is not a writable folder, or a member is incomplete (full disk).
    """
    folder = check_output_folder(folder)
    clean_folder(folder)
    try:
        staging = folder / f"{STAGING_PREFIX}{os.getpid()}.{secrets.token_hex(4)}"
        staging.mkdir()
    except OSError as error:
        raise _write_failed(error, folder) from None
    staged = StagedSet(folder, staging)
    try:
        yield staged
        names = staged.members()
        for name in names:
            verify_output(staging / name, str(folder / name))
            _sync(staging / name)
        journal = {"files": names, "remove": [n for n in replaces if n not in names]}
        with open(staging / JOURNAL, "w") as handle:
            json.dump(journal, handle)
            handle.flush()
            os.fsync(handle.fileno())
        verify_output(staging / JOURNAL)
        _fsync_folder(staging)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_failed(error, folder) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # From here on the set is committed: a kill leaves the journal, and the next run rolls forward.
    _commit(staging, folder)
    shutil.rmtree(staging, ignore_errors=True)


def _commit(staging: Path, folder: Path) -> None:
    """Move a journalled staging folder's members into ``folder``; safe to repeat after a kill.

    The old members go out first (into the staging folder's ``.old``), and only then do the new
    ones come in, so at no moment does ``folder`` hold new files beside old ones: a kill leaves part
    of the old set or part of the new one, which the next run completes.
    """
    journal = json.loads((staging / JOURNAL).read_text())
    old = staging / ".old"
    old.mkdir(exist_ok=True)
    # A member still in staging has not come in yet, so the file under its name is the old one.
    leaving = [name for name in journal["files"] if (staging / name).exists()] + journal["remove"]
    for name in leaving:
        if (folder / name).exists() or (folder / name).is_symlink():
            os.replace(folder / name, old / name)
    _fsync_folder(folder)
    for name in journal["files"]:
        if (staging / name).exists():
            os.replace(staging / name, folder / name)
    _fsync_folder(folder)
    os.unlink(staging / JOURNAL)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
