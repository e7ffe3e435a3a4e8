"""Networks of Portrait4D-v2: the synthesizer Ψ / Ψ3d, its parts, and the other models."""
