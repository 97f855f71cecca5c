"""What the pages and the CLI do: review, import and export, pre-labeling, reports, accounts."""
