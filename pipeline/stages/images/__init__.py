"""The image stage: each persona's base selfie and variations (``stage``) and the pure post-processing of a
grid (``imaging``). Imports ``core``, ``providers``, ``storage``, ``stages.context`` and ``db``.
"""
