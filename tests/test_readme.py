"""The README's API examples work as written against `make run`'s defaults: every shell
and Python block of its "Integration API" section, run in order against a real worker
on the offline model, with the key and address put in as a person does after
`make run` (the key they made, and the worker's address for 127.0.0.1:8000)."""

import os
import re
import subprocess
import sys

import pytest

from .helpers import servers
from .helpers.servers import ROOT, start_daphne

pytestmark = pytest.mark.django_db(transaction=True)

README = ROOT / "README.md"
SECTION = re.compile(r"<!-- section: integration api -->(.*?)<!-- section: ", re.S)
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)
# A block may end on a stream cut by its own --max-time (curl's exit 28).
CUT_BY_MAX_TIME = 28


def examples() -> list[tuple[str, str]]:
    section = SECTION.search(README.read_text()).group(1)
    return BLOCK.findall(section)


def test_the_readme_has_runnable_api_examples():
    kinds = [kind for kind, _ in examples()]
    assert kinds.count("sh") >= 6 and kinds.count("python") >= 2
    assert "gpt-4o-mini" not in "".join(code for _, code in examples())


@pytest.fixture
def worker(django_db_setup):
    # make run's defaults: nothing configured (the offline model), at its usual pace.
    server = start_daphne(env={"CHAT_OFFLINE_DELAY_MS": "5"}, name="readme-daphne")
    yield server
    server.stop()


def as_a_person_would(code: str, *, url: str, key: str) -> str:
    return code.replace("http://127.0.0.1:8000", url).replace("chs_...", key)


def test_every_api_example_in_the_readme_runs_as_written(worker, key, user):
    """The shell blocks run in one shell, in order (they share ID and the like); each
    Python block runs as a script of its own."""
    env = {**os.environ, "DATABASE_URL": servers.test_database_url(), "PATH": os.environ["PATH"]}
    script, outputs = [], []
    shell = [code for kind, code in examples() if kind == "sh"]
    for index, code in enumerate(shell):
        script.append(as_a_person_would(code, url=worker.url, key=key))
        # A stream's output may not end its line: the marker starts one of its own.
        script.append(f'status=$?; echo; echo "@@block {index} exit $status"')
    done = subprocess.run(
        ["bash", "-u", "-c", "\n".join(script)],
        cwd=ROOT,
        env={**env, "PATH": f"{ROOT / '.venv/bin'}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    parts = re.split(r"^@@block (\d+) exit (\d+)$", done.stdout, flags=re.M)
    for index in range(len(shell)):
        output, block, status = parts[index * 3], parts[index * 3 + 1], parts[index * 3 + 2]
        allowed = {0, CUT_BY_MAX_TIME} if "--max-time" in shell[index] else {0}
        assert int(block) == index
        assert int(status) in allowed, f"block {index} exited {status}:\n{shell[index]}\n{output}"
        outputs.append(output)
    shown = "\n".join(outputs)
    assert "chs_" in outputs[0]  # create_api_key printed a key
    assert '"name":"offline-demo"' in shown.replace(" ", "")
    assert "event: message.completed" in shown
    assert "# From the README" in shown  # the Markdown export
    assert "data: [DONE]" in shown
    assert '"code"' not in shown, f"an example was refused:\n{shown}"

    for kind, code in examples():
        if kind != "python":
            continue
        ran = subprocess.run(
            [sys.executable, "-c", as_a_person_would(code, url=worker.url, key=key)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, f"{code}\n{ran.stderr}"
        assert "offline demo model" in ran.stdout
