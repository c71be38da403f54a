"""Session agent: a persistent Python REPL inside the sandbox (``rewards.code.session``).

Runs inside the session's sandbox with the standard library only. Reads calls from the call
fd (8-byte big-endian length + JSON ``{"token", "code"}``), runs the code in one globals dict
kept for the whole session (notebook style: a last bare expression prints its repr), and writes
``{"token", "error"}`` as one JSON line to the reply fd. stdout and stderr are the host's
output pipe. Nothing here is trusted by the host: the code it runs shares this process.
argv: call_fd reply_fd.
"""

import ast
import json
import linecache
import os
import sys
import traceback


def _read_exact(fd, size):
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _run(code, env, name):
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    try:
        tree = ast.parse(code, name)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, name, "exec"), env)
        if last is not None:
            value = eval(compile(last, name, "eval"), env)
            if value is not None:
                print(repr(value))
        return None
    except BaseException as exc:  # noqa: B036 - every failure is the model's observation
        # only the model's own cells, never this agent's frames
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename.startswith("<cell")]
        head = ["Traceback (most recent call last):\n"] if frames else []
        lines = [*head, *traceback.format_list(frames),
                 *traceback.format_exception_only(type(exc), exc)]
        return "".join(lines)


def _main():
    call_fd, reply_fd = int(sys.argv[1]), int(sys.argv[2])
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    env = {"__name__": "__main__", "__builtins__": __builtins__}
    os.write(reply_fd, b'{"ready": true}\n')
    calls = 0
    while True:
        header = _read_exact(call_fd, 8)
        if header is None:
            return
        body = _read_exact(call_fd, int.from_bytes(header, "big"))
        if body is None:
            return
        call = json.loads(body)
        calls += 1
        error = _run(call["code"], env, f"<cell {calls}>")
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(reply_fd, (json.dumps({"token": call["token"], "error": error}) + "\n").encode())


if __name__ == "__main__":  # run by ``python -c``; importing it starts nothing
    _main()
