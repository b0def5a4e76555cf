"""Latency on devices not at hand: calibrate a device once (``calibrate`` over ``grid`` and ``timing``), then predict a bundle's latency from it anywhere (``kernels``, ``fit``, ``predict``)."""
