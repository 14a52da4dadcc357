"""Exact answers on tiny problems, by enumeration: the ground truth that the tests check against
(enumeration: NELBOs, chain laws, true denoisers; block: the same for block diffusion)."""
from maskdiff.exact.block import TrueBlockDenoiser, exact_block_nelbo, block_chain_law
from maskdiff.exact.enumeration import (enumerate_sequences, toy_distribution, sequence_index, true_denoiser, mask_patterns, gauss_legendre,
    _pattern_costs, _pattern_probs, exact_nelbo, _reconstruction, exact_discrete_nelbo, chain_law, order_law, _transition,
    remasking_chain_laws, forward_state_law, autoregressive_order_nll, empirical_law, true_genmd4_denoiser,
    conditional_toy, exact_genmd4_nelbo)  # noqa: F401 (the private ones: for the tests that check their parts)

__all__ = [
    'enumerate_sequences', 'toy_distribution', 'sequence_index', 'true_denoiser', 'mask_patterns',
    'gauss_legendre', 'exact_nelbo', 'exact_discrete_nelbo', 'chain_law', 'order_law', 'remasking_chain_laws',
    'forward_state_law', 'autoregressive_order_nll', 'empirical_law', 'true_genmd4_denoiser', 'conditional_toy',
    'exact_genmd4_nelbo', 'TrueBlockDenoiser', 'exact_block_nelbo', 'block_chain_law'
]
