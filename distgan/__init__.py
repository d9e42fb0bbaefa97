"""distgan: reproducible, comparable, distributed GAN experiments on MNIST."""

__version__ = "0.1.0"
