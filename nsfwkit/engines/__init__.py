"""Engines that run the kit's work past one process: :mod:`nsfwkit.engines.ray_engine` (Ray Data).

Nothing here is imported by ``import nsfwkit``; Ray is the optional ``nsfwkit[ray]`` extra.
"""
