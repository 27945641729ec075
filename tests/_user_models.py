"""Network factories as a user writes them (``package.module:factory``, a callable
``num_classes -> nn.Module``), for tests/test_user_model.py; importable as ``_user_models``
because pytest puts tests/ on sys.path."""
from torch import nn

WIDTH = 8  # a test changes it to make a factory whose parameters no longer fit its sources


def timm_resnet(num_classes: int) -> nn.Module:
    """timm's smallest ResNet (BatchNorm, residual blocks), built without weights."""
    import timm

    return timm.create_model("test_resnet", pretrained=False, num_classes=num_classes)


def timm_convnext(num_classes: int) -> nn.Module:
    """timm's smallest ConvNeXt (LayerNorm, layer scale), built without weights."""
    import timm

    return timm.create_model("test_convnext", pretrained=False, num_classes=num_classes)


def sequential(num_classes: int) -> nn.Module:
    """A plain nn.Sequential: two convolutions, global pooling, a linear head."""
    return nn.Sequential(nn.Conv2d(3, WIDTH, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(WIDTH, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def ten_classes(num_classes: int) -> nn.Module:
    """A factory that ignores num_classes (a mistake the checks must name)."""
    return sequential(10)


def no_module(num_classes: int):
    return "not a network"


def conv_head(num_classes: int) -> nn.Module:
    """A network without nn.Linear: its head is a 1x1 convolution."""
    return nn.Sequential(nn.Conv2d(3, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def conv_head_named(num_classes: int) -> nn.Module:
    """The same, naming its head for polarity (``polarity_head``)."""
    m = conv_head(num_classes)
    m.polarity_head = ("0",)
    return m


NOT_CALLABLE = 3
