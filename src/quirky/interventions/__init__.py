"""Interventions: reflect the last-token state across a probe direction and measure the LM's answers."""

from quirky.interventions.reflect import decoder_layers, final_norm, householder, reflect_last_position

__all__ = ["decoder_layers", "final_norm", "householder", "reflect_last_position"]
