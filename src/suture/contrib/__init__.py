"""Integrations with third-party libraries, one module each, imported only when used."""
