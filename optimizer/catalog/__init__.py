"""Catalogue loading: model cards and hardware data, validated by pydantic."""
