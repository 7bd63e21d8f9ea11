"""Database layer: typed models, engine/session factory and every query (``db.queries``)."""
