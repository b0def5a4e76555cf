"""One small member of every torchvision family goes through pruning at s=0.5 and ONNX export with
parity: it ends compressed (MACs reduced, parity passed) or as a user error, never another exception.

Members are built small through each family's own classes (random weights, the smallest valid
input) so the whole file stays well inside the suite's time budget; benchmarks/check_torchvision.py
--all runs the 80 full-size models through the CLI.
"""
import os

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig
from torchvision.models.maxvit import MaxVit
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from edgerobust.errors import EdgeRobustError
from edgerobust.workstation.model.export import exporter_of, export_onnx, parity
from edgerobust.workstation.model.load import load_model
from edgerobust.workstation.prune.structural import prune
from edgerobust.workstation.configs import PruneConfig

SLOW = os.environ.get("EDGEROBUST_SLOW_TESTS") == "1"

# family -> (tiny member, input size, expected outcome)
FAMILIES = {
    "resnet": (lambda: tvm.ResNet(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10), 32, "compressed"),
    "resnext": (lambda: tvm.ResNet(tvm.resnet.Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=8,
                                   num_classes=10), 32, "compressed"),
    "mobilenet_v2": (lambda: tvm.mobilenet_v2(width_mult=0.25, num_classes=10), 32, "compressed"),
    "mobilenet_v3": (lambda: tvm.mobilenet_v3_small(num_classes=10), 32, "compressed"),
    "efficientnet": (lambda: EfficientNet([MBConvConfig(1, 3, 1, 16, 16, 1), MBConvConfig(6, 3, 2, 16, 24, 1)], 0.2,
                                          num_classes=10), 32, "compressed"),
    "efficientnet_v2": (lambda: EfficientNet([FusedMBConvConfig(1, 3, 1, 16, 16, 1), MBConvConfig(4, 3, 2, 16, 32, 1)],
                                             0.2, last_channel=64, num_classes=10), 32, "compressed"),
    "regnet": (lambda: RegNet(BlockParams.from_init_params(depth=2, w_0=16, w_a=8.0, w_m=2.0, group_width=8),
                              num_classes=10), 32, "compressed"),
    "densenet": (lambda: tvm.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                                      num_classes=10), 32, "compressed"),
    "squeezenet": (lambda: tvm.squeezenet1_1(num_classes=10), 64, "compressed"),
    "shufflenet": (lambda: tvm.ShuffleNetV2([2, 2, 2], [24, 24, 48, 96, 128], num_classes=10), 32, "compressed"),
    "mnasnet": (lambda: tvm.MNASNet(0.25, num_classes=10), 32, "compressed"),
    "googlenet": (lambda: tvm.googlenet(aux_logits=False, init_weights=False, num_classes=10), 32, "compressed"),
    "convnext": (lambda: ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10), 32,
                 "compressed"),
    "vit": (lambda: tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32,
                                          mlp_dim=64, num_classes=10), 32, "compressed"),
    "swin": (lambda: SwinTransformer([4, 4], 16, [1, 1], [1, 2], [2, 2], num_classes=10), 32, "compressed"),
    "swin_v2": (lambda: SwinTransformer([4, 4], 16, [1, 1], [1, 2], [2, 2], num_classes=10,
                                        block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2), 32, "compressed"),
    "maxvit": (lambda: MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                              block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10), 32,
               "compressed"),
    "adaptive_pool": (lambda: torch.nn.Sequential(  # AlexNet/VGG's trait: adaptive pooling to a non-divisor size
        torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(6), torch.nn.Flatten(),
        torch.nn.Linear(16 * 36, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)), 16, "compressed"),
}
if SLOW:  # the largest members (tens of seconds each on 2 cores)
    FAMILIES["inception"] = (lambda: tvm.inception_v3(aux_logits=False, init_weights=False, num_classes=10), 75,
                             "compressed")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
def test_every_family_compresses_or_is_refused_clearly(family, tmp_path):
    build, size, expected = FAMILIES[family]
    torch.manual_seed(0)
    net = build().eval()
    x = torch.rand(2, 3, size, size)
    try:
        result = prune(net, x, 10, PruneConfig(sparsity=0.5), show_progress=False, warn=False)
        path = export_onnx(net, x, tmp_path / "m.onnx")
        p = parity(net, path, np.random.default_rng(0).random((4, 3, size, size), dtype=np.float32))
    except EdgeRobustError as exc:  # a clear refusal (what, why, what to do) is allowed; a traceback is not
        assert exc.why and exc.fix, str(exc)
        outcome = "refused"
    else:
        assert result.macs_after < result.macs_before and p.ok, (result.macs_reduction, p)
        outcome = "compressed"
    assert outcome == expected


def test_adaptive_pooling_falls_back_to_the_dynamo_exporter_and_says_so(tmp_path):
    net = FAMILIES["adaptive_pool"][0]().eval()
    path = export_onnx(net, torch.rand(1, 3, 16, 16), tmp_path / "m.onnx")
    assert exporter_of(path) == "dynamo"
    path = export_onnx(FAMILIES["resnet"][0]().eval(), torch.rand(1, 3, 32, 32), tmp_path / "r.onnx")
    assert exporter_of(path) == "torchscript"


@pytest.mark.parametrize("name, kwargs, key", [
    ("mnasnet0_5", {}, None),  # torchvision refuses weights without their _metadata version
    ("googlenet", {"aux_logits": True, "init_weights": False}, "aux1.conv.conv.weight"),
    ("googlenet", {"aux_logits": False, "init_weights": False}, None),
    ("vit_b_32", {"image_size": 64}, None),
    ("squeezenet1_1", {}, None),  # classifies with a 1x1 conv: num_classes is read from it
])
def test_state_dicts_load_with_the_constructor_their_keys_call_for(name, kwargs, key, tmp_path):
    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None, num_classes=10, **kwargs).eval()
    state = model.state_dict()
    if key:
        assert key in state
    path = tmp_path / "m.pt"
    torch.save(dict(state), path)  # a plain dict: the _metadata is lost, as with many user scripts
    loaded = load_model(path, arch=f"torchvision:{name}")
    assert loaded.num_classes == 10
    size = kwargs.get("image_size", 64)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))
    assert getattr(loaded.model, "aux1", None) is None  # training-only heads are dropped
