import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.test_cli import run_cli


def test_export_command_writes_a_checked_file(prectr_run, tiny_world, tmp_path, capsys):
    out = tmp_path / "model.pt"
    code, text = run_cli(["export", str(prectr_run), "--format", "torchscript", "--out",
                          str(out), "--history", str(tiny_world)], capsys)  # fmt: skip
    assert code == 0 and out.is_file() and "largest difference" in text


def test_serve_refuses_an_incomplete_run_with_a_clear_message(prectr_run, tmp_path, capsys):
    broken = tmp_path / "run"
    shutil.copytree(prectr_run, broken)
    (broken / "checkpoints" / "best.pt").unlink()
    code, text = run_cli(["serve", str(broken)], capsys)
    assert code == 2 and "best.pt:nocheckpoint" in "".join(text.split())  # rich wraps lines
    code, text = run_cli(["serve", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "notarundirectory" in "".join(text.split())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_over_http_within_its_body_limit(prectr_run, tiny_world):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from prectr.cli import main; main()", "serve", str(prectr_run),
         "--history", str(tiny_world), "--port", str(port), "--max-body-bytes", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200 and b'"ok"' in r.read()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.5)
        big = urllib.request.Request(f"http://127.0.0.1:{port}/rank", data=b" " * 2001,
                                     headers={"content-type": "application/json"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(big, timeout=10)
        assert refused.value.code == 413
    finally:
        server.terminate()
        server.wait(30)
