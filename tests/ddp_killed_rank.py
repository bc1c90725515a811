"""``python -m torch.distributed.run ... tests/ddp_killed_rank.py DIES_AT run ...`` (tests/test_distributed.py):
``clpet run ...`` on every rank, except that rank 0, on starting to learn experience ``DIES_AT``, sends SIGKILL to
the launcher (its parent) and to the ranks (torch's elastic agent starts them in a process group of their own), as
a node that loses power would. Rank 0 saved the
checkpoint of experience ``DIES_AT - 1`` before it gets there, so the resumed run has something to resume from;
the other ranks are wherever they are when the signal lands."""
import os
import signal
import sys

from clpet import distributed
from clpet.cli import main
from clpet.methods.base import Method


def run(dies_at: int, argv) -> int:
    real_learn = Method.learn_experience

    def dies(self, exp):
        if exp.index == dies_at and distributed.is_main():
            os.kill(os.getppid(), signal.SIGKILL)
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return real_learn(self, exp)

    Method.learn_experience = dies
    return main(argv)


if __name__ == "__main__":
    sys.exit(run(int(sys.argv[1]), sys.argv[2:]))
