"""Decoding over any one-step decoder: typed options, greedy and beam search, attention strips."""
