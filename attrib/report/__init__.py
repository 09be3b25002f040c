"""Reports a person reads: `score --html`."""
