"""Which of RELION's three implementations of the E-step a run reproduces.

relion_refine runs one of three codes, chosen by its command line, and they give different
numbers in a few well-defined places:

- ``CPU``: its original CPU code (no ``--gpu``, no ``--cpu``);
- ``GPU``: its accelerated code on CUDA devices (``--gpu``);
- ``ALTCPU``: its accelerated code's CPU kernels (``--cpu``).

tomodash takes the same flags and follows the code they name, so that a RELION command line run
with ``tomodash refine`` gives RELION's numbers. Where the codes differ (each measured against
RELION 5.0.1 runs, ``tests/data/refine_unkind/sizes2``):

- shift phases of an optics group of another box: divided by the model's box in the CPU code,
  by the image's own in the accelerated code (``EStepContext.phase_box``);
- the reference projection's radius for such a group (``EStepContext.projected``);
- ``rlnLogLikeliContribution``: the CPU code divides the orientation and offset priors by their
  means over the searched grid; the accelerated code uses them as they are, so its
  log-likelihoods are lower by the log of those means (9.38 per particle on ``sizes2``); it
  also divides each image pixel by its CTF before scoring except where ``|C| <= 1e-8``, and
  those pixels' weight ``C²/σ²`` leaves their power out of its log-likelihoods (up to 1.66 higher
  than the CPU code's rule on 11 of ``sizes2``'s 35 particles of group 1; the poses and weights
  do not depend on it);
- the search centre of a 2D tilt stack: the accelerated code rounds the old offset to whole
  pixels (``selfROUND``) and adds the translations to that; the CPU code keeps it as it is.
  Either way the offset is relion_refine's own sum in pixels
  (:attr:`~processing.refine.estep.ParticleState.origin_px`), and a half pixel reached through
  its arithmetic can come out 0.49999999999999989 and round down;
- back-projection of 2D images: the accelerated code's CPU kernel (``backprojectRef3D``) inserts
  a pixel ``(x, y)`` of the half transform only when ``(x + 1)² + y² <= (s/2)²`` (``s``: the
  image's current size), which leaves out the outermost pixel of every row; the CUDA kernel and
  the CPU code insert every scored pixel within the model's current radius.
"""
from __future__ import annotations

import enum

__all__ = ["RelionCode"]


class RelionCode(enum.Enum):
    CPU = "cpu"
    GPU = "gpu"
    ALTCPU = "altcpu"

    @classmethod
    def chosen_by(cls, *, gpu: str | None, cpu: bool, skip_align: bool = False) -> "RelionCode":
        """The code relion_refine runs for its ``--gpu [ids]`` (None: not given) and ``--cpu``:
        ``--gpu`` wins over ``--cpu``, and a classification without alignment
        (``--skip_align``) runs the CPU code whatever the flags (RELION drops the accelerators)."""
        if skip_align:
            return cls.CPU
        if gpu is not None:
            return cls.GPU
        return cls.ALTCPU if cpu else cls.CPU

    @property
    def accelerated(self) -> bool:
        """The accelerated code (``--gpu`` or ``--cpu``)."""
        return self is not RelionCode.CPU

    @property
    def trims_inserted_rows(self) -> bool:
        """Back-projection of 2D images leaves out each row's outermost pixel (``--cpu``)."""
        return self is RelionCode.ALTCPU
