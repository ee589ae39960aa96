"""Token verification and revocation, tokens, policy, egress, creator rights."""
