from .discovery_asset import build_discovery
from .health_asset import build_health
from .phase_assets import ApplyConfig, build_backfill, build_phase
from .restore_job import RestoreConfig, build_restore_job
from .stats_asset import build_stats

__all__ = ["ApplyConfig", "RestoreConfig", "build_backfill", "build_discovery", "build_health", "build_phase", "build_restore_job", "build_stats"]
