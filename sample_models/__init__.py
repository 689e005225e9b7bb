"""Scripts that build the sample models and benchmark cases (need the ``bench`` extra)."""
