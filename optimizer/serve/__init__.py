"""`rigopt serve`: a local web page and JSON API over the same questions and answers as the CLI (optional extra
`rigopt[serve]`: FastAPI, uvicorn, fastapi-offline)."""
