"""tomodash's processing engine: RELION 5's subtomogram-averaging programs in Python.

Layers (docs/architecture.md): ``errors``, ``abort``, ``io``, ``fourier``, ``geometry``,
``parallel`` and ``glibc_random`` at the ground; the engines ``extract``, ``reconstruct``,
``refine`` and ``simulate`` above them; ``jobs`` (one job directory each) and ``cli`` on top.
"""
