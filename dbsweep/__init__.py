"""dbsweep: safe, resumable, verifiable cleanup of production databases.

The engine (this package) never imports Dagster or Great Expectations.
"""

__version__ = "0.1.0"
