"""Network definitions and a registry by name (installed as na_deploy.models)."""
from na_deploy.models.registry import MODEL_NAMES, ModelRegistryError, ModelSpec, build_model, model_spec
from na_deploy.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet20, resnet34, resnet50
from na_deploy.models.small import DigitsCNN, TinyResNet, digits_cnn, tiny_resnet

__all__ = ["MODEL_NAMES", "ModelRegistryError", "ModelSpec", "build_model", "model_spec", "BasicBlock",
           "Bottleneck", "ResNet", "resnet18", "resnet20", "resnet34", "resnet50", "DigitsCNN", "TinyResNet",
           "digits_cnn", "tiny_resnet"]
