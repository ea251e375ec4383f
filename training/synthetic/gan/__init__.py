"""The conditional time-series GAN: networks in ``core``, fit / sample / save in ``model``."""
