"""Recipes: end-to-end jobs that compose components (the CLI only parses arguments and calls these)."""
