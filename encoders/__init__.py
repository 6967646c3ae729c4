"""Encoder cards (TOML), shipped as package data."""
