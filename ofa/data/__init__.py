"""Data: embedded datasets (MNIST-5k, digits), local ones (CIFAR, ImageFolder), the data module."""
