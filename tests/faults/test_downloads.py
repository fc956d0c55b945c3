"""Promise 9, downloads: a killed download resumes with fewer bytes than the file; a corrupted one
never reaches its final path. tests/data/test_download.py covers the in-process cases (dropped
connection, stale .part, server ignoring Range); here the downloading process is really killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from loopback import RangeServer, sha
from sotakit.data.download import DownloadError, download

PAYLOAD = os.urandom(4 << 20)  # 4 MiB: the client writes its .part in 1 MiB blocks


@pytest.mark.slow
def test_killed_download_resumes_with_fewer_bytes_than_the_file(tmp_path):
    dest = tmp_path / "blob.bin"
    part = tmp_path / "blob.bin.part"
    with RangeServer({"blob.bin": PAYLOAD}) as server:
        server.throttle = 0.03  # 64 KiB per 30 ms: about 2 s for the whole file
        code = (f"from sotakit.data.download import download; "
                f"download({server.url + '/blob.bin'!r}, {str(dest)!r}, {sha(PAYLOAD)!r})")
        child = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= 1 << 20) and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        kept = part.stat().st_size
        assert 0 < kept < len(PAYLOAD) and not dest.exists()
        server.throttle = 0.0
        assert download(f"{server.url}/blob.bin", dest, sha(PAYLOAD)).read_bytes() == PAYLOAD
        first, resumed = server.requests
    assert first[1] is None and first[3] >= kept  # the killed process had received at least what it kept
    assert resumed[1:] == (f"bytes={kept}-", 206, len(PAYLOAD) - kept)  # only the rest was fetched
    assert resumed[3] < len(PAYLOAD) and not part.exists()


@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
def test_corrupted_download_never_reaches_the_final_path(tmp_path, resumed):
    dest = tmp_path / "blob.bin"
    with RangeServer({"blob.bin": PAYLOAD}) as server:
        server.corrupt_at = 3_000_000  # one flipped byte in flight, in every answer
        if resumed:
            dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:2_000_000])
        with pytest.raises(DownloadError, match="sha256") as e:
            download(f"{server.url}/blob.bin", dest, sha(PAYLOAD))
        # a resumed attempt that fails is retried once from zero (a stale .part could be the cause)
        assert [r[2] for r in server.requests] == ([206, 200] if resumed else [200])
    assert sha(PAYLOAD) in str(e.value)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
