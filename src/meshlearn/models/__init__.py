"""meshlearn.models: small reference torch models, seeded construction and cost accounting."""

from meshlearn.models.zoo import MODELS, TRAIN_FLOPS_FACTOR, build_model, count_params, flops_per_sample

__all__ = ["MODELS", "TRAIN_FLOPS_FACTOR", "build_model", "count_params", "flops_per_sample"]
