"""Integrations with third-party libraries, one module each; each imports its library
only when used, and the core package imports none of them."""
