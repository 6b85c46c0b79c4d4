"""One drawer module per SEM category; each drawer paints a `Canvas` and returns the `Morphology` it drew."""
