"""Report room: before/after tables, RESULTS.md and results.json from evaluation directories."""
