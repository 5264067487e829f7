"""actors: supervised actors for Trio, with OTP semantics (placeholder until the runtime lands)."""

__all__: list[str] = []
