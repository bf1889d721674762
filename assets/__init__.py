from .phase_assets import ApplyConfig, build_phase

__all__ = ["ApplyConfig", "build_phase"]
