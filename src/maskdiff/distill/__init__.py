"""Few-step generation by distillation (``maskdiff distill``): ``sdtt`` holds the math of SDTT as functions
over denoisers (the two-half-step target and the divergence), ``rounds`` the loop of rounds that halve the
sampling steps, writing the student as an ordinary run folder."""
from maskdiff.distill.rounds import METHODS, DistillResult, DistillSettings, distill
from maskdiff.distill.sdtt import HalfSteps, half_steps, kl_to_target, sdtt_loss, sdtt_target

__all__ = ["METHODS", "DistillResult", "DistillSettings", "HalfSteps", "distill", "half_steps", "kl_to_target", "sdtt_loss",
           "sdtt_target"]
