"""The session lock under crashes and a full disk (issue 12).

* a lock left by a holder that was SIGKILLed (after taking it, or between writing its owner
  file and renaming it into place) is taken over at once, not after minutes;
* an empty owner file (a writer that died, e.g. of a full disk) blocks for seconds, not for the
  120 s lock timeout; an unreadable or foreign one is reported by its description;
* a full disk while taking the lock is a clear error (:class:`SessionLockError`, ``tomodash``
  exit status 1 and one line) and leaves no ``.relion_lock`` behind;
* atomic writes on a full disk raise :class:`WriteFailed` naming the target and leave no
  temporary file.

The disk-full tests mount a small tmpfs (root only; CI runs as root).
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import fill_disk
from processing.io.atomic import WriteFailed, atomic_write, remove_temporaries
from sessions.lock import (
    RELION_LOCK_DIR, RELION_LOCK_FILE, LockTimeout, SessionLock, SessionLockError, lock_owner_state,
)
from sessions.procinfo import identity_of

ROOT = Path(__file__).resolve().parents[1]


def _owner_file(root: Path) -> Path:
    return root / RELION_LOCK_DIR / RELION_LOCK_FILE


def _leave_lock(root: Path, content: bytes | None, *, age: float = 0.0) -> Path:
    """A ``.relion_lock`` as someone else left it (``content`` None: no owner file)."""
    lock_dir = root / RELION_LOCK_DIR
    lock_dir.mkdir(mode=0o700)
    if content is not None:
        _owner_file(root).write_bytes(content)
        then = time.time() - age
        os.utime(_owner_file(root), (then, then))
    return lock_dir


def _take(root: Path, *, timeout: float = 10.0, stale_after: float = 300.0) -> float:
    """Take and release the lock; seconds it took."""
    lock = SessionLock(root, timeout=timeout, stale_after=stale_after)
    start = time.monotonic()
    with pytest.warns(UserWarning, match="removing"):
        lock.acquire("test")
    took = time.monotonic() - start
    assert "tomodash pid=" in _owner_file(root).read_text()
    lock.release()
    assert not (root / RELION_LOCK_DIR).exists()
    return took


# ---- the owner file -------------------------------------------------------------------------

def test_owner_file_is_complete_and_no_temporary_remains(tmp_path):
    lock = SessionLock(tmp_path)
    lock.acquire("create job\nwith a newline")
    try:
        entries = sorted(p.name for p in (tmp_path / RELION_LOCK_DIR).iterdir())
        assert entries == [RELION_LOCK_FILE]  # renamed into place, nothing else
        text = _owner_file(tmp_path).read_text()
        me = identity_of(os.getpid())
        assert text == (f"tomodash pid={me.pid} start={me.start_time} host={me.host} "
                        f"boot={me.boot_id or '-'}: create job with a newline\n")
        state = lock_owner_state(tmp_path / RELION_LOCK_DIR)
        assert state.owner == me and not state.stale and not state.expires
    finally:
        lock.release()
    assert not (tmp_path / RELION_LOCK_DIR).exists()


_HOLDER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    import sessions.lock as lock_module
    if sys.argv[2] == "before-rename":
        def stuck(src, dst):   # die between writing the owner's temporary file and renaming it
            print("held", flush=True)
            time.sleep(600)
        lock_module.os.replace = stuck
    lock_module.SessionLock(sys.argv[1]).acquire("holder")
    print("held", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("when", ["after-rename", "before-rename"])
def test_lock_of_sigkilled_holder_is_taken_over_at_once(tmp_path, when):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=str(ROOT)), str(tmp_path), when],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        names = [p.name for p in (tmp_path / RELION_LOCK_DIR).iterdir()]
        if when == "before-rename":
            assert names and names[0].startswith(f".{RELION_LOCK_FILE}.{holder.pid}.")  # only the temporary
        else:
            assert names == [RELION_LOCK_FILE]
        # Alive: another process waits for it and says who holds it.
        with pytest.raises(LockTimeout, match=f"tomodash process {holder.pid} on this host"):
            SessionLock(tmp_path, timeout=0.5).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert (tmp_path / RELION_LOCK_DIR).exists()  # SIGKILL left it behind
    assert _take(tmp_path, timeout=10) < 1.0      # ...and it is taken over at once, not after 300 s


def test_owner_whose_pid_was_reused_is_stale(tmp_path):
    me = identity_of(os.getpid())
    # Our own pid, but another start time: the recorded process is gone, the number was reused.
    line = f"tomodash pid={me.pid} start={me.start_time - 1} host={me.host} boot={me.boot_id or '-'}: old\n"
    _leave_lock(tmp_path, line.encode())
    assert lock_owner_state(tmp_path / RELION_LOCK_DIR).stale
    assert _take(tmp_path) < 1.0


def test_empty_owner_file_does_not_block(tmp_path):
    # What a holder that died of a full disk left with tomodash <= issue 12: an empty owner file.
    _leave_lock(tmp_path, b"", age=30)
    assert _take(tmp_path, timeout=120) < 1.0
    # A fresh empty file may be a writer between mkdir and its first line: a short grace only.
    _leave_lock(tmp_path, b"")
    assert _take(tmp_path, timeout=120) < 5.0


def test_garbled_and_unreadable_owner_files_are_judged_not_raised(tmp_path):
    _leave_lock(tmp_path, b"\xff\xfe\x00garbage")
    state = lock_owner_state(tmp_path / RELION_LOCK_DIR)
    assert not state.stale and state.expires and "another program" in state.description
    with pytest.raises(LockTimeout, match="another program"):
        SessionLock(tmp_path, timeout=0.3).acquire()
    _owner_file(tmp_path).unlink()
    _owner_file(tmp_path).mkdir()  # unreadable as a file (root can read any file, not a directory)
    with pytest.raises(LockTimeout, match="cannot be read"):
        SessionLock(tmp_path, timeout=0.3).acquire()
    # Such holders cannot be checked from here: they expire after stale_after seconds.
    (tmp_path / RELION_LOCK_DIR / RELION_LOCK_FILE).rmdir()
    _owner_file(tmp_path).write_bytes(b"\xff\xfe")
    old = time.time() - 10
    os.utime(_owner_file(tmp_path), (old, old))
    assert _take(tmp_path, stale_after=5) < 1.0


def test_foreign_and_remote_holders_expire_by_age_only(tmp_path):
    # RELION's own reason line: waited for (it is alive as far as we can tell) ...
    _leave_lock(tmp_path, b"RELION GUI: reading pipeline\n")
    with pytest.raises(LockTimeout, match="RELION GUI: reading pipeline"):
        SessionLock(tmp_path, timeout=0.3).acquire()
    # ... until it is older than stale_after.
    assert _take(tmp_path, timeout=5, stale_after=0.5) < 3.0
    # A tomodash process on another host cannot be checked from here either.
    other = "tomodash pid=1 start=1 host=some-other-host.example boot=-: remote\n"
    assert socket.gethostname() != "some-other-host.example"
    _leave_lock(tmp_path, other.encode())
    with pytest.raises(LockTimeout, match="on host some-other-host.example"):
        SessionLock(tmp_path, timeout=0.3).acquire()
    old = time.time() - 400
    os.utime(_owner_file(tmp_path), (old, old))
    assert _take(tmp_path) < 1.0
    # The CCP-EM pipeliner's style: the directory alone.
    lock_dir = _leave_lock(tmp_path, None)
    with pytest.raises(LockTimeout, match="CCP-EM"):
        SessionLock(tmp_path, timeout=0.3).acquire()
    os.utime(lock_dir, (old, old))
    assert _take(tmp_path) < 1.0


# ---- a full disk ------------------------------------------------------------------------------

def test_full_disk_while_taking_the_lock_is_a_clear_error_and_leaves_no_lock(small_disk):
    root = small_disk / "session"
    root.mkdir()
    filler = fill_disk(small_disk)
    start = time.monotonic()
    with pytest.raises(SessionLockError) as caught:
        SessionLock(root, timeout=120).acquire("create job")
    assert time.monotonic() - start < 5
    assert caught.value.errno == errno.ENOSPC
    message = str(caught.value)
    assert "no space left on device" in message and str(root / RELION_LOCK_DIR) in message
    assert "Traceback" not in message
    assert not (root / RELION_LOCK_DIR).exists()
    # Space freed: the next taker gets it at once (no stale directory, the flock was dropped).
    filler.unlink()
    lock = SessionLock(root, timeout=1)
    lock.acquire()
    lock.release()


def test_cli_on_a_full_disk_says_so_in_one_line(small_disk, capsys):
    from dashboard.cli import main

    sys.path.insert(0, str(Path(__file__).parent / "fake_jobs"))
    from sessions_testkit import register_sleeper

    register_sleeper()
    root = small_disk / "session"
    assert main(["session", "new", str(root)]) == 0
    assert main(["run", "sleeper", "--session", str(root), "--no-launch"]) == 0
    capsys.readouterr()
    fill_disk(small_disk)
    for argv in (["run", "sleeper", "--session", str(root), "--no-launch"],
                 ["continue", "External/job001", "--session", str(root)]):
        start = time.monotonic()
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 1 and time.monotonic() - start < 10, err
        assert err.startswith(f"tomodash {argv[0]}: error: cannot take the session lock: no space left on device")
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not (root / RELION_LOCK_DIR).exists()


def test_atomic_write_on_a_full_disk_names_the_target_and_leaves_no_temporary(small_disk):
    target = small_disk / "run_it002_half1_class001.mrc"
    target.write_bytes(b"old and complete")
    fill_disk(small_disk)
    with pytest.raises(WriteFailed) as caught:
        with atomic_write(target, "wb") as handle:
            handle.write(b"x" * 1_000_000)
    assert caught.value.errno == errno.ENOSPC and caught.value.disk_full
    assert str(caught.value) == f"no space left on device (writing {target})"
    assert target.read_bytes() == b"old and complete"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", target.name]


def test_atomic_write_errors_about_other_files_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_write(tmp_path / "out.star") as handle:
            handle.write("x")
            open(tmp_path / "missing-input.star").read()
    assert not isinstance(caught.value, WriteFailed) and "missing-input.star" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_remove_temporaries_only_removes_interrupted_atomic_writes(tmp_path):
    (tmp_path / "sub").mkdir()
    keep = [tmp_path / "run_it001_optimiser.star", tmp_path / ".hidden", tmp_path / "x.tmp"]
    drop = [tmp_path / ".run_it002_optimiser.star.ab3_x9z1.tmp", tmp_path / "sub" / ".1_stack2d.mrcs.k2j4h5g6.tmp"]
    for path in keep + drop:
        path.write_text("")
    assert sorted(remove_temporaries(tmp_path)) == sorted(drop)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in drop)


def test_write_failed_keeps_the_errno_specific_class(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_write(tmp_path / "no-such-dir" / "out.star") as handle:
            handle.write("x")
    assert isinstance(caught.value, WriteFailed)
    assert str(caught.value) == f"no such file or directory (writing {tmp_path / 'no-such-dir' / 'out.star'})"
