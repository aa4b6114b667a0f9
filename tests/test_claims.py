"""Claims (lock files) between processes and hosts: when a claim holds, when it is taken over, and the
waiting helpers. The same-host dead-pid case is in test_reliability.py (a cell's claim)."""

import json
import os
import threading
import time

import pytest

from harness import claims
from harness.claims import Claim, claim_or_wait


def _write_owner(path, **owner):
    path.write_text(json.dumps({"host": "another-host", "pid": 12345, "job": "", "since": 0, **owner}))


def _age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_claim_is_exclusive_until_released(tmp_path):
    first, second = Claim(tmp_path / "a.claim"), Claim(tmp_path / "a.claim")
    assert first.acquire() and not second.acquire()
    owner = second.owner()
    assert owner["pid"] == os.getpid() and owner["host"]
    first.release()
    assert not (tmp_path / "a.claim").exists() and second.acquire()
    second.release()


def test_another_hosts_claim_holds_while_touched_and_is_taken_over_when_silent(tmp_path):
    path = tmp_path / "a.claim"
    _write_owner(path)
    claim = Claim(path, stale_after=300)
    assert not claim.acquire()  # touched just now: its owner may be alive on that host
    _age(path, 301)
    assert claim.acquire() and claim.owner()["pid"] == os.getpid()
    claim.release()


def test_a_half_written_claim_holds_for_a_minute_then_is_taken_over(tmp_path):
    path = tmp_path / "a.claim"
    path.write_text('{"host": "ano')  # its owner is still writing it
    claim = Claim(path)
    assert not claim.acquire()
    _age(path, 61)
    assert claim.acquire()
    claim.release()


def test_a_claim_of_our_own_requeued_slurm_job_is_taken_over(tmp_path, monkeypatch):
    path = tmp_path / "a.claim"
    _write_owner(path, job="4242", restart=0)  # fresh, on another host: it would hold for anyone else
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    assert not Claim(path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert not Claim(path).acquire()  # the same run of the job: another live process of the allocation
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same job, requeued after a preemption
    claim = Claim(path)
    assert claim.acquire() and claim.owner()["job"] == "4242" and claim.owner()["restart"] == 1
    claim.release()


def test_processes_of_one_slurm_allocation_do_not_take_each_others_claims(tmp_path, monkeypatch):
    # e.g. gpu_pool workers inside one sbatch job: one SLURM_JOB_ID, live pids on one host
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    first = Claim(tmp_path / "a.claim")
    assert first.acquire()
    assert not Claim(tmp_path / "a.claim").acquire()
    first.release()
    assert not (tmp_path / "a.claim").exists()


def test_a_taken_over_claim_is_not_released_by_its_former_owner(tmp_path):
    path = tmp_path / "a.claim"
    former = Claim(path, stale_after=300)
    assert former.acquire()
    former._stop.set()  # its heartbeat stopped (a hung owner on another host, say)
    path.write_text(json.dumps({**former.owner(), "host": "another-host"}))
    _age(path, 301)
    successor = Claim(path, stale_after=300)
    assert successor.acquire()
    former.release()  # must not delete the successor's claim
    assert path.exists() and successor.owner()["token"] == successor._token
    assert not Claim(path).acquire()
    successor.release()
    assert not path.exists()


def test_a_stale_claim_taken_over_meanwhile_is_put_back(tmp_path):
    # two processes judged the same file stale; the first took it over before the second moved it
    path = tmp_path / "a.claim"
    _write_owner(path)
    judged = path.read_bytes()
    path.unlink()
    winner = Claim(path)
    assert winner.acquire()
    late = Claim(path)
    late._discard(judged)
    assert path.exists() and winner.owner()["token"] == winner._token
    assert not list(tmp_path.glob("*.stale"))
    winner.release()


def test_a_held_claim_is_touched_by_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "HEARTBEAT", 0.05)
    claim = Claim(tmp_path / "a.claim")
    assert claim.acquire()
    _age(claim.path, 1000)
    deadline = time.time() + 5
    while time.time() - claim.path.stat().st_mtime > 100 and time.time() < deadline:
        time.sleep(0.05)
    assert time.time() - claim.path.stat().st_mtime < 100  # another host would not take it over
    claim.release()


def test_wait_times_out_naming_the_owner_or_returns_when_the_work_is_done(tmp_path):
    holder = Claim(tmp_path / "a.claim")
    assert holder.acquire()
    with pytest.raises(TimeoutError, match=f"still claimed by .*'pid': {os.getpid()}"):
        Claim(tmp_path / "a.claim").wait(poll=0.01, timeout=0.05)
    assert Claim(tmp_path / "a.claim").wait(poll=0.01, done=lambda: True) is False
    holder.release()
    waiter = Claim(tmp_path / "a.claim")
    assert waiter.wait(poll=0.01, timeout=1) is True and waiter.held
    waiter.release()


def test_claim_or_wait_hands_back_the_work_of_the_owner_it_waited_for(tmp_path):
    path, result = tmp_path / "model.claim", tmp_path / "model.pt"

    def ready():
        return result.read_text() if result.exists() else None

    owner, value = claim_or_wait(path, ready, poll=0.01)
    assert owner is not None and owner.held and value is None  # nothing there: the work is ours

    def finish():
        time.sleep(0.1)
        result.write_text("weights")
        owner.release()

    worker = threading.Thread(target=finish)
    worker.start()
    second, value = claim_or_wait(path, ready, poll=0.01)  # blocks until the owner is done
    worker.join()
    assert second is None and value == "weights" and not path.exists()


def test_a_claim_untouched_for_long_is_stale_even_if_its_pid_lives_again(tmp_path):
    """After a reboot or a container restart the pid in a leftover claim can belong to another live process:
    the missing heartbeat, not the pid, says the owner is gone."""
    import json
    import os
    import socket
    import time

    from harness.claims import STALE_AFTER, Claim

    path = tmp_path / "seed0.claim"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "job": "", "since": 0.0,
                                "token": "old"}))
    assert not Claim(path).is_stale()  # a live pid with a fresh heartbeat holds it
    old = time.time() - 2 * STALE_AFTER
    os.utime(path, (old, old))
    assert Claim(path).is_stale()
    claim = Claim(path)
    assert claim.acquire() and json.loads(path.read_text())["pid"] == os.getpid()
    claim.release()


@pytest.mark.parametrize("content", ["[]", '{"pid": "abc", "host": "HOST"}', '{"restart": "x", "job": "1"}'])
def test_a_claim_file_that_is_no_claim_record_does_not_crash_the_cell(tmp_path, content):
    import os
    import socket
    import time

    from harness.claims import Claim

    path = tmp_path / "seed0.claim"
    path.write_text(content.replace("HOST", socket.gethostname()))
    claim = Claim(path)
    stale = claim.is_stale()  # no AttributeError / ValueError
    if content == "[]":  # unreadable as a record: stale once it has stayed so for a minute
        assert claim.owner() is None and not stale
        old = time.time() - 120
        os.utime(path, (old, old))
    if "restart" in content:  # another host's fresh record: held until its heartbeat stops
        assert not stale and not claim.acquire()
        return
    assert claim.acquire()
    claim.release()
