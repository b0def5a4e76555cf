"""Common corruptions and camera noise (ImageNet-C, Hendrycks & Dietterich 2019) as bundle sets.

numpy + scipy + Pillow, torch-free: :mod:`.registry` names every corruption (with its family, its
parameters per severity and why one is left out), :mod:`.sets` writes them into a bundle.
"""
