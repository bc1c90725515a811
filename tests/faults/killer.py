"""``python tests/faults/killer.py FILE N WHEN run ...``: ``clpet run ...`` that SIGKILLs itself during its N-th
atomic write of the run file FILE (``checkpoint.pt``, ``metrics.json``, ...). WHEN is ``half`` (half of the new
file's bytes are in the temporary file, not yet renamed: a torn write) or ``before-rename`` (the whole temporary
file written and fsynced, the rename not done). A process killed so gets no chance to clean up, as on a power
cut: the temporary file stays behind."""
import io
import os
import signal
import sys

import clpet.results as results
from clpet.cli import main


def install(target: str, n: int, when: str) -> None:
    real = results._atomic_write
    calls = {"n": 0}

    def atomic_write(path, write):
        if os.path.basename(str(path)) == target:
            calls["n"] += 1
            if calls["n"] == n:
                def torn(f):
                    buffer = io.BytesIO()
                    write(buffer)
                    data = buffer.getvalue()
                    f.write(data if when == "before-rename" else data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)

                return real(path, torn)
        return real(path, write)

    results._atomic_write = atomic_write


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    sys.exit(main(sys.argv[4:]))
