"""Plain cross-entropy with instance-balanced sampling (the LDAM-DRW CIFAR recipe)."""
from ltlab.methods.base import Recipe, register


class CE(Recipe):
    name = "ce"
    paper = "He et al. 2016 / Cao et al. 2019 (CIFAR-LT recipe)"
    changes = "nothing: softmax cross-entropy, instance-balanced sampling"


register(CE())
