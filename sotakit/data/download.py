"""Verified, resumable downloads and safe archive extraction.

A data set is only ever used after its bytes were checked against a published checksum, and
nothing appears under its final name until it is complete: downloads land in ``<dest>.part`` and
archives are unpacked into a hidden temporary folder, and both are moved into place with
``os.replace`` only when they are whole. A crash or a dropped connection therefore never leaves
something that looks ready but is not, and a rerun resumes where the last attempt stopped.
Standard library only.

Written by hand rather than taken from ``torchvision.datasets.utils.download_url``, which checks MD5
only (forgeable; several of our sources publish SHA-256) and restarts from zero after a dropped
connection instead of resuming with a Range request.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

Progress = Callable[[int, int | None], None]

CHUNK = 1 << 20
USER_AGENT = "sotakit-downloader"
# Connection drops are routine on multi-hundred-megabyte archives; each retry resumes.
RETRIES = 3


class DownloadError(RuntimeError):
    """A download failed or its bytes did not match the published checksum."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks (``hashlib.file_digest``) so archives need little memory."""
    return _digest(Path(path), "sha256")


def _digest(path: Path, algorithm: str) -> str:
    # FIPS-mode OpenSSL refuses MD5 unless it is declared a non-security use.
    new = (lambda: hashlib.md5(usedforsecurity=False)) if algorithm == "md5" else algorithm
    with open(path, "rb") as f:
        return hashlib.file_digest(f, new).hexdigest()


def _check(path: Path, sha256: str | None, md5: str | None,
           alt_sha256: Iterable[str]) -> tuple[bool, str, str]:
    """Return (ok, expected, actual); SHA-256 wins whenever one is known because MD5 is forgeable."""
    if sha256 is not None:
        actual = sha256_of(path)
        accepted = {sha256.lower(), *(a.lower() for a in alt_sha256)}
        return actual in accepted, f"sha256 {sha256}", f"sha256 {actual}"
    assert md5 is not None
    actual = _digest(path, "md5")
    return actual == md5.lower(), f"md5 {md5}", f"md5 {actual}"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a file system that cannot fsync a folder is left as it is."""
    # Without this the rename itself may be lost on power failure even though the data was synced.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    md5: str | None = None,
    alt_sha256: Iterable[str] = (),
    progress: Progress | None = None,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial attempt, and verify it.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        dest: Final path; written only once the checksum matches.
        sha256: Expected SHA-256 (preferred).
        md5: Expected MD5, used only when no SHA-256 is known (some sources publish only MD5).
        alt_sha256: Other accepted SHA-256 values, for byte-different but equivalent packagings.
        progress: Called as ``progress(bytes_done, bytes_total_or_None)`` while streaming.
        timeout: Socket timeout in seconds for each request.

    Returns:
        ``dest``.

    Raises:
        ValueError: Neither checksum given; unverified data is never accepted.
        DownloadError: Network failure after retries, or a checksum mismatch (the ``.part`` file
            is deleted in that case so the next attempt starts clean).
    """
    if sha256 is None and md5 is None:
        raise ValueError(f"refusing to download {url} without a checksum to verify it against")
    dest = Path(dest)
    alt_sha256 = tuple(alt_sha256)
    if dest.is_file() and _check(dest, sha256, md5, alt_sha256)[0]:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    restarted = False
    while True:
        resumed = part.exists() and part.stat().st_size > 0
        _fetch_with_retries(url, part, progress, timeout)
        ok, expected, actual = _check(part, sha256, md5, alt_sha256)
        if ok:
            break
        part.unlink(missing_ok=True)
        # A stale .part from an older upload of the file poisons the resumed result; one clean
        # retry tells that apart from a genuinely changed or corrupted source.
        if resumed and not restarted:
            restarted = True
            continue
        raise DownloadError(f"checksum mismatch for {url}: expected {expected}, got {actual}")

    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


def _fetch_with_retries(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    last: Exception | None = None
    for _ in range(RETRIES):
        try:
            if _fetch(url, part, progress, timeout):
                return
            last = DownloadError(f"connection to {url} closed early after {part.stat().st_size} bytes")
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code not in (408, 429):  # 404, 403...: asking again will not help
                raise DownloadError(f"could not download {url}: {e}") from e
            last = e
        except (OSError, EOFError) as e:  # URLError, timeouts, connection resets
            last = e
    raise DownloadError(f"could not download {url}: {last}") from last


def _fetch(url: str, part: Path, progress: Progress | None, timeout: float) -> bool:
    """Append the rest of ``url`` to ``part``; return False if the stream ended early."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Nothing left past our offset: the .part is probably complete; the checksum decides.
            return True
        raise
    with response:
        status = getattr(response, "status", None)
        length = response.headers.get("Content-Length")
        if status == 206:
            if _range_start(response.headers.get("Content-Range")) != offset:
                # A partial body for some other range is useless; restart without Range.
                part.unlink(missing_ok=True)
                return False
            mode, done = "ab", offset
        else:
            # 200 (or file://, which ignores Range): the server sent everything, start over.
            mode, done = "wb", 0
        total = done + int(length) if length is not None else None
        with open(part, mode) as f:
            while block := response.read(CHUNK):
                f.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
    # http.client returns b"" rather than raising when a peer hangs up early, so count bytes.
    return total is None or done >= total


def _range_start(content_range: str | None) -> int | None:
    # "bytes 500-999/1000" -> 500
    if not content_range or not content_range.startswith("bytes "):
        return None
    try:
        return int(content_range[6:].split("-", 1)[0])
    except ValueError:
        return None


def _safe_member_name(name: str, archive: Path) -> PurePosixPath:
    """Reject names that would land outside the target folder (absolute, ``..``, drive letters)."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise ValueError(f"refusing to extract {archive}: member {name!r} would escape the target folder")
    return posix


def _check_tar(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        _safe_member_name(m.name, archive)
        if m.issym() or m.islnk():
            # Symlink targets are relative to the link's folder, hard-link targets to the archive root.
            target = PurePosixPath(m.name).parent / m.linkname if m.issym() else PurePosixPath(m.linkname)
            if (PurePosixPath(m.linkname).is_absolute()
                    or ".." in PurePosixPath(os.path.normpath(target)).parts):
                raise ValueError(f"refusing to extract {archive}: link {m.name!r} -> {m.linkname!r} "
                                 "would escape the target folder")
        elif not (m.isfile() or m.isdir()):
            raise ValueError(f"refusing to extract {archive}: member {m.name!r} is a device or fifo")
    return members


def extract(archive: Path, dest_dir: Path) -> Path:
    """Unpack a tar(.gz/.bz2/.xz) or zip archive into ``dest_dir`` without ever exposing a partial result.

    Members are unpacked into a hidden temporary folder inside ``dest_dir``; each top-level entry
    is then moved into place with ``os.replace``. A folder such as ``cifar-10-batches-py`` thus
    either is absent or complete, even if the process is killed halfway.

    Args:
        archive: The archive file.
        dest_dir: Folder to unpack into (created if needed).

    Returns:
        The single top-level folder of the archive if it has exactly one, else ``dest_dir``.

    Raises:
        ValueError: The archive has a member with an absolute path or ``..`` (path traversal),
            a link pointing outside, or a device file; or the format is not tar/zip.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    prefix = f".extract-{archive.name}-"
    for stale in dest_dir.glob(prefix + "*"):  # left behind by a killed earlier attempt
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest_dir))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    _safe_member_name(name, archive)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = _check_tar(tar, archive)
                # Our own checks give the clear message; the stdlib "data" filter is a second guard.
                tar.extractall(tmp, members=members, filter="data")
        else:
            raise ValueError(f"{archive} is neither a tar nor a zip archive")
        tops = sorted(p.name for p in tmp.iterdir())
        for name in tops:
            final = dest_dir / name
            if final.exists():
                # Only reached when the caller decided the existing copy is unusable.
                trash = Path(tempfile.mkdtemp(prefix=prefix, dir=dest_dir))
                os.replace(final, trash / name)
            os.replace(tmp / name, final)
        fsync_dir(dest_dir)
    finally:
        for leftover in dest_dir.glob(prefix + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
    if len(tops) == 1 and (dest_dir / tops[0]).is_dir():
        return dest_dir / tops[0]
    return dest_dir
