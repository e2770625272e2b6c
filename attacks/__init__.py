"""Attacks on what crosses the cut of a split network.

Works on arrays and callables (activations, a client function); never imports `nopeek`.
"""
