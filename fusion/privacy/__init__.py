"""De-identification: the PHI rules and what a person may see of a page, a prediction or a search."""
