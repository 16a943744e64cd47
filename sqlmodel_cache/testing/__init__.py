"""Testing helpers for apps and transport authors (the contract suite lands here)."""
