"""Defaults shared by every command and the library (torch-free), so they cannot drift apart.

Adversarial sets: the research's FGSM and PGD at 2/255, 4/255 and 8/255 (Linf, in [0, 1] pixel
units: inputs are always [0, 1] pixels, with the model's normalization inside it).
"""

DEFAULT_ATTACKS = "fgsm,pgd"
DEFAULT_EPS = "2/255,4/255,8/255"
DEFAULT_EVAL_SAMPLES = 1000  # compress, attack, sweep and demo evaluate (and attack) up to this many
DEFAULT_CRITERION = "l2"
DEFAULT_MAX_PRUNE_DROP = 5.0  # accuracy points pruning + fine-tuning may lose against the base
DEFAULT_MAX_INT8_DROP = 2.0  # accuracy points int8 may lose against the pruned fp32 model
# share of samples on which int8 must give the pruned fp32 model's top-1 answer (below 99% compress warns)
DEFAULT_MIN_INT8_AGREEMENT = 0.9
# --arch, as every command explains it (the zoo's names are checked against edgerobust.workstation.model.nets.ZOO in the tests)
ARCH_HELP = ("torchvision:NAME (e.g. torchvision:resnet18), timm:NAME (if timm is installed), zoo:NAME (digits-cnn, "
             "digits-resnet; the zoo: prefix may be left out), or module:factory (the module is looked up in the "
             "current folder first, then on the Python path)")
