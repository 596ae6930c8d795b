"""The REST API (/api/v1): HTTP only, on top of `inference`. Build it with `create_api(engine)`."""

from api.app import create_api

__all__ = ["create_api"]
