"""Latency on devices not at hand: calibrate a device once, then predict a bundle's latency from it."""
