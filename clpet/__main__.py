"""``python -m clpet ...`` (what ``torchrun --nproc_per_node=N -m clpet run ...`` starts on each rank)."""
import sys

from clpet.cli import main

sys.exit(main())
