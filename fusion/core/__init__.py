"""The core every room uses: settings, user-facing errors, atomic files, a project's label set."""
