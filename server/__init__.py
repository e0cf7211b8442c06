"""HTTP server of the feature viewer (FastAPI); see server/API.md."""
