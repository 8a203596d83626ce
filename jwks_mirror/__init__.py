"""jwks-mirror: fetch in-mesh JWKS over mTLS, validate strictly, republish on plain HTTP."""

__version__ = "0.1.0"
