"""app.file_watch: told by the kernel (inotify) when a file is written."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from app.file_watch import FileWatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


@pytest.fixture
def watched(tmp_path):
    path = tmp_path / "version"
    path.write_bytes(b"0")
    watch = FileWatch.open(str(path))
    assert watch is not None
    yield path, watch
    watch.close()


def write_later(path, delay: float) -> threading.Thread:
    def write() -> None:
        time.sleep(delay)
        descriptor = os.open(path, os.O_WRONLY)
        os.pwrite(descriptor, b"0123456789abcdef", 0)
        os.close(descriptor)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_a_write_ends_the_wait_at_once(watched):
    path, watch = watched
    writer = write_later(path, 0.2)
    started = time.monotonic()
    assert watch.wait(30)
    assert time.monotonic() - started < 10  # told, not timed out
    writer.join()
    assert not watch.lost


def test_without_a_write_the_wait_ends_at_its_timeout(watched):
    _, watch = watched
    started = time.monotonic()
    assert not watch.wait(0.3)
    assert time.monotonic() - started >= 0.29


def test_a_wake_from_another_thread_ends_the_wait(watched):
    _, watch = watched
    threading.Timer(0.2, watch.wake).start()
    assert watch.wait(30)
    assert not watch.wait(0.1)  # the wake was used up


def test_a_deleted_file_is_reported_lost(watched):
    path, watch = watched
    path.unlink()
    assert watch.wait(10)
    assert watch.lost


def test_a_missing_file_gives_no_watch(tmp_path):
    assert FileWatch.open(str(tmp_path / "absent")) is None
