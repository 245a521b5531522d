"""na-deploy: noise-adaptor QAT -> IF SNN -> Loihi 2 fixed point -> Lava, verified bit-exact."""
__version__ = "0.1.0"
