"""Templates of the models people use, built without downloading anything: torchvision ResNet
and ViT, timm models and Hugging Face models from configs; a source template mapped onto the
same architecture with a new head by name patterns."""
import pytest
import torch
import torchvision

from polarity import Freezer, Template, impose

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def _adapted(source_model, target, drop, seed=0):
    source = Template.from_module(source_model)
    t = source.adapt(target, drop=drop, seed=seed)
    t.check(target)
    new = t.meta["adapted"]["random"]
    for k in source:
        if k in t and k not in new:
            assert torch.equal(t[k], source[k])
    return source, t, new


def test_torchvision_resnet_onto_a_10_class_head():
    torch.manual_seed(0)
    src = torchvision.models.resnet18()
    with torch.device("meta"):
        target = torchvision.models.resnet18(num_classes=10)
    source, t, new = _adapted(src, target, drop="fc.*")
    assert new == ["fc.weight"] and len(t) == len(source)
    assert all(src.get_parameter(k).dim() >= 2 for k in source)  # convs and fc; BN stays free


def test_torchvision_vit_onto_a_10_class_head():
    torch.manual_seed(0)
    kw = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    src = torchvision.models.VisionTransformer(**kw)
    target = torchvision.models.VisionTransformer(**kw, num_classes=10)
    source, t, new = _adapted(src, target, drop="heads.*")
    assert new == ["heads.head.weight"]
    weights_only = Template.from_module(src, exclude=["class_token", "*pos_embedding"])
    assert "class_token" in source and "class_token" not in weights_only
    adapted = weights_only.adapt(target, drop="heads.*", seed=0)  # the recorded rule applies
    assert adapted.meta["adapted"]["random"] == ["heads.head.weight"]
    impose(target, t)
    assert sum(t.violations(target).values()) == 0


@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny_patch16_224"])
def test_timm_models_onto_a_new_head(arch):
    torch.manual_seed(0)
    src = timm.create_model(arch, pretrained=False)
    target = timm.create_model(arch, pretrained=False, num_classes=10)
    head = target.default_cfg["classifier"]
    source, t, new = _adapted(src, target, drop=f"{head}.*")
    assert new == [f"{head}.weight"]
    impose(target, t)
    opt = torch.optim.SGD(target.parameters(), lr=1.0)
    freezer = Freezer(target, t, seed=0)
    freezer.attach(opt)
    target(torch.randn(2, 3, 224, 224)).sum().backward()
    opt.step()
    assert freezer.violations() == 0 and int(freezer.last_reset) > 0


def test_hugging_face_masked_lm_onto_a_sequence_classifier():
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    src = transformers.BertForMaskedLM(cfg)
    target = transformers.BertForSequenceClassification(cfg)
    source = Template.from_module(src.state_dict())  # both names of the tied embedding
    t = source.adapt(target, drop="cls.*", seed=0)
    assert t.meta["adapted"]["random"] == ["bert.pooler.dense.weight", "classifier.weight"]
    assert torch.equal(t["bert.embeddings.word_embeddings.weight"],
                       source["bert.embeddings.word_embeddings.weight"])
    impose(target, t)
    assert sum(t.violations(target).values()) == 0
