from .dbsweep_resource import DbsweepResource

__all__ = ["DbsweepResource"]
