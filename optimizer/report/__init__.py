"""Result objects (pydantic, stable JSON) and their rich renderings."""
