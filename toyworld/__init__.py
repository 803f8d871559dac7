"""The toy video world with ground truth, and the small Wan trained on it (docs/toy-world.md)."""
