"""Measurements of sub-networks on devices and the predictors fitted from them."""
