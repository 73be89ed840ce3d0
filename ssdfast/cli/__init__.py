"""Command-line entry points: ssdfast-train, -eval, -detect, -export, -data."""
