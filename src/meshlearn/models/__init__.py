"""meshlearn.models: small reference torch models (the zoo's classifiers, a tiny GPT), seeded construction and
cost accounting."""

from meshlearn.models.gpt import GPT, GPTConfig, build_gpt, train_lm
from meshlearn.models.zoo import MODELS, build_model, count_params, flops_per_sample

__all__ = ["MODELS", "build_model", "count_params", "flops_per_sample", "GPT", "GPTConfig", "build_gpt", "train_lm"]
