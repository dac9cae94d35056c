"""canaryguard: safe canary rollouts for ML inference services on Istio."""

__version__ = "0.1.0"
