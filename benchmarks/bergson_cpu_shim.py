"""Runs `python -m bergson ...` in bergson's own environment with one CPU fix applied.

bergson 2.5.1's ASTRA and CG refinement (`bergson ekfac --num_steps N`) read each query's
starting point from a read-only memory map and update it in place; on a GPU, or from a
half-precision index, the read copies it, but on a CPU with float32 gradients the tensor
aliases the map and the first in-place update ends the process with a segmentation fault.
Here each row is copied after it is read; nothing else changes.

    BERGSON_PYTHON benchmarks/bergson_cpu_shim.py ekfac RUN --solver cg --num_steps 10 ...
"""

import sys

from bergson.__main__ import main
from bergson.hessians import astra

_read_row = astra.Astra._read_row


def _read_row_copied(self, *args):
    return {name: row.clone() for name, row in _read_row(self, *args).items()}


astra.Astra._read_row = _read_row_copied

if __name__ == "__main__":
    sys.argv[0] = "bergson"
    main()
