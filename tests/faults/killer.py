"""``python tests/faults/killer.py SPEC run ...``: ``clpet run ...`` that SIGKILLs itself at the moment SPEC names,
with no chance to clean up, as on a power cut:

- ``write:FILE:N:WHEN`` -- during its N-th atomic write of the run file FILE (``checkpoint.pt``, ``metrics.json``);
  WHEN is ``half`` (half of the new bytes in the temporary file, not renamed: a torn write) or ``before-rename``
  (the whole temporary file written and fsynced, the rename not done). The temporary file stays behind.
- ``step:N`` -- at its N-th optimizer step (training), before the update is applied.
- ``eval:N`` -- at its N-th inference pass over a sample set (evaluation, feature extraction).
- ``learn:N`` -- as it starts to learn experience N (rank 0 under torchrun, after it wrote the checkpoint of
  experience N - 1).

Under torchrun the signal goes to the launcher (the parent) and to the ranks (torch's elastic agent starts them
in a process group of their own): the whole job dies at once, as a node that loses power.
"""
import io
import os
import signal
import sys

import clpet.features as features
import clpet.methods.base as method_base
import clpet.methods.lm_base as lm_base
import clpet.results as results
import clpet.training as training
from clpet import distributed
from clpet.cli import main


def die() -> None:
    if distributed.launched():
        os.kill(os.getppid(), signal.SIGKILL)
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def dies_learning(n: int) -> None:
    real = method_base.Method.learn_experience  # every method's class learns through it

    def learn_experience(self, exp):
        if exp.index == n and distributed.is_main():
            die()
        return real(self, exp)

    method_base.Method.learn_experience = learn_experience


def on_nth_call(owner, name: str, n: int, counter: dict) -> None:
    """``owner.name``'s calls counted in ``counter`` (shared between patched names); the n-th one kills."""
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        counter["n"] += 1
        if counter["n"] == n:
            die()
        return real(*args, **kwargs)

    setattr(owner, name, counted)


def torn_writes(target: str, n: int, when: str) -> None:
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
                    die()

                return real(path, torn)
        return real(path, write)

    results._atomic_write = atomic_write


def install(spec: str) -> None:
    kind, *rest = spec.split(":")
    if kind == "write":
        torn_writes(rest[0], int(rest[1]), rest[2])
    elif kind == "step":
        on_nth_call(training, "update", int(rest[0]), {"n": 0})
    elif kind == "learn":
        dies_learning(int(rest[0]))
    elif kind == "eval":
        counter = {"n": 0}
        on_nth_call(method_base, "map_loader", int(rest[0]), counter)
        on_nth_call(features, "map_loader", int(rest[0]), counter)
        on_nth_call(lm_base, "map_batches", int(rest[0]), counter)
    else:
        raise SystemExit(f"unknown kill spec {spec}")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
