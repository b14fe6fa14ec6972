"""quirky: measure whether probes on a language model's hidden states elicit what it knows.

Stages (each a subpackage, each a `quirky <stage>` command):
datasets -> finetune -> extraction -> probes/experiments -> anomaly/interventions -> report.
"""

__version__ = "0.1.0"
