"""What a built zoo model says about itself: its number of classes and its preprocessing at an input size.

Export, benchmark-engine, the bundle's reference and the attention analysis all ask these two questions of a
PyTorch model; they live here, beside the models, so no stage asks another stage for them.
"""
import torch

from deploy.preprocess import PreprocessSpec


def num_classes_of(model: torch.nn.Module) -> int:
    """The classifier's outputs: the last Linear layer's width (every zoo family ends in one)."""
    last_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    return last_linear.out_features


def preprocess_for(model: torch.nn.Module, input_size: int) -> PreprocessSpec:
    """The model's own preprocessing, scaled to ``input_size`` (resize = crop / crop fraction)."""
    spec: PreprocessSpec = model.preprocess
    if input_size == spec.input_size:
        return spec
    return PreprocessSpec.for_input_size(input_size, interpolation=spec.interpolation, mean=spec.mean, std=spec.std,
                                         normalize_in_graph=spec.normalize_in_graph)
