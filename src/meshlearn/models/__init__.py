"""meshlearn.models: small reference torch models, seeded construction and cost accounting."""

from meshlearn.models.zoo import MODELS, build_model, count_params, flops_per_sample

__all__ = ["MODELS", "build_model", "count_params", "flops_per_sample"]
