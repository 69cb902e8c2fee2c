"""Single-turn tasks: one prompt, one answer, no tools (file-level repair with search/replace edits, detection)."""
