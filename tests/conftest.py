"""Shared pytest configuration.

Fixture modules live beside this file and are registered here so every test directory
can use them.
"""
