"""Job entry point of 3D classification (RELION ``relion.class3d``, tomo; relion_refine
without ``--auto_refine``).

::

    python -m processing.jobs.class3d --job-dir Class3D/job009
    mpiexec -n 3 python -m mpi4py -m processing.jobs.class3d --job-dir Class3D/job009
    tomodash refine --o Class3D/job009/run --ios Select/job008/optimisation_set.star \\
        --ref Refine3D/job007/run_class001.mrc --K 2 --iter 5 --tau2_fudge 1 ...

The first two read ``job.star`` (Class3DParameters) from the job directory; the third is
``tomodash refine`` with relion_refine's flags, which runs a classification when
``--auto_refine`` is absent. All end in :func:`~processing.jobs.refine3d.run_with_lifecycle`.
"""
from __future__ import annotations

import sys

from .class3d_params import Class3DParameters
from .refine3d import main_for

__all__ = ["Class3DParameters", "main"]


def main(argv: list[str] | None = None) -> int:
    return main_for(Class3DParameters, "processing.jobs.class3d", argv)


if __name__ == "__main__":
    sys.exit(main())
