"""Test doubles: stand-ins that check how our code talks to a dependency. Not product code."""
