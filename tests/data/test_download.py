"""Downloads resume and verify; extraction is atomic and refuses path traversal. Loopback only."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from loopback import RangeServer, dead_url, sha
from sotakit.data.download import DownloadError, download, extract, sha256_of

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes


@pytest.fixture
def server():
    with RangeServer({"blob.bin": PAYLOAD}) as s:
        yield s


def test_download_verifies_and_places_file(server, tmp_path):
    seen = []
    dest = download(f"{server.url}/blob.bin", tmp_path / "out" / "blob.bin", sha(PAYLOAD),
                    progress=lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "blob.bin.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert sha256_of(dest) == sha(PAYLOAD)


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "blob.bin"
    download(f"{server.url}/blob.bin", dest, sha(PAYLOAD))
    download(f"{server.url}/blob.bin", dest, sha(PAYLOAD))
    assert len(server.requests) == 1


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "blob.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as e:
        download(f"{server.url}/blob.bin", dest, wrong)
    msg = str(e.value)
    assert f"{server.url}/blob.bin" in msg and wrong in msg and sha(PAYLOAD) in msg
    assert not dest.exists()
    assert not dest.with_name("blob.bin.part").exists()


def test_file_hash_covers_every_block(tmp_path):
    """Hashing a file on disk (hashlib.file_digest) sees all of a file several read blocks long."""
    data = bytes(range(251)) * 12_000 + b"tail"  # ~2.9 MiB, not a multiple of any block size
    (tmp_path / "f").write_bytes(data)
    assert sha256_of(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "f").write_bytes(data[:-1] + b"T")
    assert sha256_of(tmp_path / "f") != hashlib.sha256(data).hexdigest()


def test_md5_only_is_verified(server, tmp_path):
    good = hashlib.md5(PAYLOAD).hexdigest()
    assert download(f"{server.url}/blob.bin", tmp_path / "a", None, md5=good).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="md5"):
        download(f"{server.url}/blob.bin", tmp_path / "b", None, md5="f" * 32)
    assert not (tmp_path / "b").exists()


def test_alternative_sha256_is_accepted(server, tmp_path):
    dest = download(f"{server.url}/blob.bin", tmp_path / "a", "1" * 64, alt_sha256=(sha(PAYLOAD),))
    assert dest.read_bytes() == PAYLOAD


def test_refuses_to_download_without_checksum(server, tmp_path):
    with pytest.raises(ValueError, match="checksum"):
        download(f"{server.url}/blob.bin", tmp_path / "a", None)
    assert server.requests == []


def test_partial_file_is_resumed_with_range_request(server, tmp_path):
    dest = tmp_path / "blob.bin"
    half = len(PAYLOAD) // 2
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:half])
    download(f"{server.url}/blob.bin", dest, sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/blob.bin", f"bytes={half}-", 206, len(PAYLOAD) - half)]


def test_dropped_connection_is_resumed(server, tmp_path):
    half = len(PAYLOAD) // 2
    server.cut_once["blob.bin"] = half
    dest = download(f"{server.url}/blob.bin", tmp_path / "blob.bin", sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    (_, r1, s1, n1), (_, r2, s2, n2) = server.requests
    assert (r1, s1, n1) == (None, 200, half)
    assert (r2, s2) == (f"bytes={half}-", 206)
    assert n2 < len(PAYLOAD) and n1 + n2 == len(PAYLOAD)


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:1000])
    assert download(f"{server.url}/blob.bin", dest, sha(PAYLOAD)).read_bytes() == PAYLOAD


def test_complete_part_file_answered_416_is_accepted(server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD)
    assert download(f"{server.url}/blob.bin", dest, sha(PAYLOAD)).read_bytes() == PAYLOAD
    assert [r[2] for r in server.requests] == [416]


def test_stale_part_from_another_version_is_discarded_once(server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 1000)  # not a prefix of PAYLOAD
    assert download(f"{server.url}/blob.bin", dest, sha(PAYLOAD)).read_bytes() == PAYLOAD
    assert [(r[1], r[2]) for r in server.requests] == [("bytes=1000-", 206), (None, 200)]


def test_file_url_with_and_without_partial(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "blob.bin"
    assert download(src.as_uri(), dest, sha(PAYLOAD)).read_bytes() == PAYLOAD
    dest.unlink()
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:10])  # file:// ignores Range: restart
    assert download(src.as_uri(), dest, sha(PAYLOAD)).read_bytes() == PAYLOAD


def test_unreachable_server_raises_download_error(tmp_path):
    url = f"{dead_url()}/blob.bin"
    with pytest.raises(DownloadError, match="could not download"):
        download(url, tmp_path / "blob.bin", sha(PAYLOAD), timeout=5)
    assert not (tmp_path / "blob.bin").exists()


def test_missing_file_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download(f"{server.url}/nope.bin", tmp_path / "nope.bin", sha(PAYLOAD))
    assert [r[2] for r in server.requests] == [404]


# --- extract ------------------------------------------------------------------------------------

def make_tar(path: Path, members: dict[str, bytes], *, links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def test_extract_tar_returns_top_folder(tmp_path):
    archive = make_tar(tmp_path / "a.tgz", {"pkg/train/c/x.txt": b"1", "pkg/val/c/y.txt": b"2"})
    out = extract(archive, tmp_path / "dest")
    assert out == tmp_path / "dest" / "pkg"
    assert (out / "train/c/x.txt").read_bytes() == b"1"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["pkg"]  # no temp folders left


def test_extract_zip(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/f.txt", "hello")
    assert (extract(archive, tmp_path / "dest") / "f.txt").read_text() == "hello"


@pytest.mark.parametrize("evil", ["../escape.txt", "pkg/../../escape.txt", "/tmp/sotakit-abs-escape.txt"])
def test_extract_refuses_path_traversal_in_tar(tmp_path, evil):
    archive = make_tar(tmp_path / "a.tgz", {"pkg/ok.txt": b"ok", evil: b"pwned"})
    with pytest.raises(ValueError, match="escape"):
        extract(archive, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/sotakit-abs-escape.txt").exists()
    assert list((tmp_path / "dest").iterdir()) == []


def test_extract_refuses_escaping_symlink(tmp_path):
    archive = make_tar(tmp_path / "a.tgz", {"pkg/ok.txt": b"ok"}, links={"pkg/link": "../../outside"})
    with pytest.raises(ValueError, match="escape"):
        extract(archive, tmp_path / "dest")


def test_extract_refuses_path_traversal_in_zip(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../escape.txt", "pwned")
    with pytest.raises(ValueError, match="escape"):
        extract(archive, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_failed_extraction_leaves_no_folder(tmp_path):
    good = make_tar(tmp_path / "a.tgz", {f"pkg/f{i}.bin": bytes(5000) * (i + 1) for i in range(20)})
    truncated = tmp_path / "t.tgz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises((tarfile.TarError, EOFError, OSError, ValueError)):
        extract(truncated, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []  # neither pkg/ nor a temp folder


def test_extract_replaces_incomplete_previous_folder(tmp_path):
    (tmp_path / "dest" / "pkg").mkdir(parents=True)
    (tmp_path / "dest" / "pkg" / "stale.txt").write_text("old")
    archive = make_tar(tmp_path / "a.tgz", {"pkg/new.txt": b"new"})
    out = extract(archive, tmp_path / "dest")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["pkg"]
