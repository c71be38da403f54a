"""Property-based fuzzing of the live service from its own OpenAPI schema (schemathesis):
no generated request, valid or not, may produce a 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import TOKEN, RedisServer


def test_schemathesis_finds_no_server_errors(start_service, tmp_path: Path) -> None:
    redis_server = RedisServer()  # its own registry: fuzzed plugin registrations stay here
    try:
        svc = start_service(redis_server.url, "--plugin-timeout-s", "2", "--max-batch", "8")
        cli = Path(sys.executable).with_name("schemathesis")
        result = subprocess.run(
            [str(cli), "run", f"{svc.url}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", "20", "--phases", "examples,coverage,fuzzing", "--seed", "1",
             "--request-timeout", "30", "-H", f"Authorization: Bearer {TOKEN}"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache dir
    finally:
        redis_server.stop()
    report = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counts is not None and int(counts[1]) == int(counts[2]) >= 50, report
