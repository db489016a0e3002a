"""Jinja2 templates and the stylesheet for the node's web pages, shipped as package data."""
