"""The python sandbox contains hostile code: each case is a failed call, and nothing leaks out.

Every case runs in two modes: the audit hook alone (as where namespaces cannot be made) and, when
we are root, the OS layers alone (network/mount namespaces, own uid, rlimits), so each line of
defence is shown to hold by itself.
"""

import asyncio
import os
import signal
import socket
import tempfile
import textwrap

import pytest

from harness import sandbox
from harness.sandbox import Call, SandboxError, SandboxLimits, SandboxPool, run_calls

IS_ROOT = os.geteuid() == 0
HOOK_ONLY = SandboxLimits(timeout_s=0.6, os_isolation=False)
OS_ONLY = SandboxLimits(timeout_s=0.6, audit_hook=False)
BOTH = SandboxLimits(timeout_s=0.6)


def run(source: str, limits: SandboxLimits, calls=None):
    return asyncio.run(run_calls(textwrap.dedent(source), "f", calls or [Call()], limits))


def run_many(sources: dict[str, str], limits: SandboxLimits) -> dict:
    """All items through one pool of two servers, as the world runs them."""
    pool = SandboxPool(limits, size=2)

    async def go():
        runs = await asyncio.gather(*(pool.run(textwrap.dedent(s), "f", [Call()]) for s in sources.values()))
        return dict(zip(sources, runs))

    try:
        return asyncio.run(go())
    finally:
        pool.close()


def hostile(tmp_path, port: int, bomb: bool) -> dict[str, str]:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "victim_dir").mkdir()
    (tmp_path / "victim_dir" / "a.txt").write_text("keep me")
    fork = ("    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n" if bomb
            else "    os.fork()\n")
    return {
        "loop": "def f():\n    while True:\n        pass\n",
        "fork": "import os\ndef f():\n" + fork,
        "alloc": "def f():\n    x = bytearray(10 * 1024**3)\n    return len(x)\n",
        "write": f"def f():\n    open({str(tmp_path / 'escaped.txt')!r}, 'w').write('x')\n",
        "write_tmp": f"def f():\n    open({tempfile.gettempdir() + '/mimic-sandbox-escape-' + str(os.getpid())!r}, 'w').write('x')\n",
        "socket": f"import socket\ndef f():\n    socket.create_connection(('127.0.0.1', {port}), timeout=0.3)\n",
        "system": f"import os\ndef f():\n    if os.system('touch {tmp_path / 'system.txt'}') != 0:\n        raise OSError('failed')\n",
        "subprocess": f"import subprocess\ndef f():\n    subprocess.run(['touch', {str(tmp_path / 'sub.txt')!r}], check=True)\n",
        "delete": f"import os\ndef f():\n    os.remove({str(victim)!r})\n",
        "rmtree": f"import shutil\ndef f():\n    shutil.rmtree({str(tmp_path / 'victim_dir')!r})\n",
        "output": "import sys\ndef f():\n    for _ in range(100):\n        sys.stdout.write('x' * 1_000_000)\n",
        "exit0": "import os\ndef f():\n    os._exit(0)\n",
        "daemon": "import os, time\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(60)\n    raise RuntimeError\n",
        "kill_server": "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n",
    }


def own_uid_processes() -> list[int]:
    """Live (not zombie: those wait for init to reap them) processes under this test process's
    block of sandbox uids."""
    low = sandbox._UID_BASE + (os.getpid() % 100_000) * 1000
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            uid, state = int(fields["Uid"].split()[0]), fields["State"].split()[0]
        except (OSError, KeyError, ValueError, IndexError):
            continue
        if low <= uid < low + 1000 and state != "Z":
            found.append(int(entry))
    return found


def check_contained(results: dict, tmp_path, listener: socket.socket) -> None:
    for name, outcome in results.items():
        assert [r.ok for r in outcome.results] == [False], (name, outcome)
    assert results["loop"].results[0].reason == "timeout"
    assert results["output"].results[0].reason == "raised:OSError[errno 27]"  # EFBIG: file size cap (Python ignores SIGXFSZ)
    for leaked in ("escaped.txt", "system.txt", "sub.txt"):
        assert not (tmp_path / leaked).exists(), leaked
    assert not os.path.exists(tempfile.gettempdir() + "/mimic-sandbox-escape-" + str(os.getpid()))
    assert (tmp_path / "victim.txt").read_text() == "keep me"
    assert (tmp_path / "victim_dir" / "a.txt").exists()
    with pytest.raises(BlockingIOError):  # nobody connected
        listener.accept()


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    yield server
    server.close()


def test_hook_alone_contains_hostile_code(tmp_path, listener):
    results = run_many(hostile(tmp_path, listener.getsockname()[1], bomb=False), HOOK_ONLY)
    check_contained(results, tmp_path, listener)
    assert results["socket"].results[0].reason == "raised:PermissionError"
    assert results["fork"].results[0].reason == "raised:PermissionError"
    assert results["alloc"].results[0].reason == "raised:MemoryError"
    assert not any(results["loop"].isolation[k] for k in ("netns", "mountns", "uid"))


@pytest.mark.skipif(not IS_ROOT, reason="namespaces and a uid drop need root")
def test_os_layers_alone_contain_hostile_code(tmp_path, listener):
    os.chmod(tmp_path, 0o777)  # world-writable, so only the read-only mount can stop the writes
    try:
        results = run_many(hostile(tmp_path, listener.getsockname()[1], bomb=True), OS_ONLY)
    except SandboxError as exc:
        pytest.skip(f"OS isolation unavailable here: {exc}")
    check_contained(results, tmp_path, listener)
    assert results["socket"].results[0].reason == "raised:OSError[errno 101]"  # network unreachable
    assert results["write_tmp"].results[0].reason == "raised:OSError[errno 30]"  # read-only /tmp
    assert results["fork"].results[0].reason == "timeout"  # capped by RLIMIT_NPROC, then killed
    assert results["kill_server"].results[0].reason == "sandbox-died"  # same uid: it can; R=0, and on we go
    assert results["loop"].isolation == {"netns": True, "mountns": True, "uid": True, "audit": False}
    assert own_uid_processes() == []


def test_all_layers_together_and_the_sandbox_keeps_working(tmp_path, listener):
    results = run_many(hostile(tmp_path, listener.getsockname()[1], bomb=True), BOTH)
    check_contained(results, tmp_path, listener)
    ok = run("def f(x):\n    return [x] * 3\n", BOTH, [Call([1]), Call(["a"])])
    assert [r.ok for r in ok.results] == [True, True]
    assert own_uid_processes() == []


def test_outcomes_per_call_and_reproducible():
    source = "import random\ndef f(x):\n    if random.random() < 0.5:\n        raise ValueError\n    return 1 / x\n"
    calls = [Call([x], seed=s) for s in range(6) for x in (1, 0)]
    first = run(source, BOTH, calls)
    second = run(source, BOTH, calls)
    assert first.results == second.results
    reasons = {r.reason for r in first.results}
    assert {"ok", "raised:ValueError", "raised:ZeroDivisionError"} <= reasons
    # calls are independent: state left by one call is gone in the next
    counter = "n = []\ndef f():\n    n.append(1)\n    if len(n) > 1:\n        raise RuntimeError\n"
    assert all(r.ok for r in run(counter, BOTH, [Call(), Call(), Call()]).results)


def test_writes_inside_the_work_directory_are_allowed_and_removed():
    before = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("mimic-sandbox-")}
    source = "import os\ndef f():\n    open('scratch.txt', 'w').write('x')\n    os.remove('scratch.txt')\n    print('hi')\n"
    assert run(source, BOTH).results[0].ok
    after = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("mimic-sandbox-")}
    assert after <= before


def test_empty_and_non_compiling_input():
    assert asyncio.run(run_calls("def f(:\n", "f", [])).results == []
    with pytest.raises(SyntaxError):
        run("def f(:\n", BOTH)


def test_a_pool_reuses_servers_and_items_do_not_see_each_other():
    pool = SandboxPool(BOTH, size=2)
    writer = "def f():\n    open('leak.txt', 'w').write('x')\n"
    reader = "import os\ndef f():\n    if os.path.exists('leak.txt') or len(os.listdir('..')) > 1:\n        raise RuntimeError('saw another call')\n"

    async def go():
        return await asyncio.gather(*(pool.run(src, "f", [Call(), Call()]) for src in (writer, reader, writer, reader)))

    try:
        runs = asyncio.run(go())
        assert [[r.ok for r in run.results] for run in runs] == [[True, True]] * 4
        assert len(pool._idle) == 2  # two servers served four items
    finally:
        pool.close()
    assert pool._idle == []


def test_a_silent_server_is_killed_and_replaced(monkeypatch):
    monkeypatch.setattr(sandbox, "_ANSWER_SLACK_S", 0.3)
    pool = SandboxPool(SandboxLimits(timeout_s=0.2), size=1)
    try:
        assert pool.run_blocking("def f():\n    pass\n", "f", [Call()]).results[0].ok
        server = pool._idle[0]._proc
        os.kill(server.pid, signal.SIGSTOP)  # hangs the server itself, not a call
        run = pool.run_blocking("def f():\n    pass\n", "f", [Call()])
        assert [r.reason for r in run.results] == ["sandbox-timeout"]
        assert server.poll() is not None  # killed, with its session
        assert pool.run_blocking("def f():\n    pass\n", "f", [Call()]).results[0].ok  # a fresh server
    finally:
        pool.close()
