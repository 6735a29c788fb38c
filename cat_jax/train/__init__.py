"""Training of CAT: losses, discriminators, semantic LM, optimisers, train state and step."""
