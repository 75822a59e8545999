"""`kubemam preview`: a local page to watch one MediaAsset and find its QC findings (docs/preview.md).

gather.py reads (API server, library) → model.py builds a pure page model → page.py renders page.html with
the model as JSON → server.py serves it on 127.0.0.1 with presigned S3 URLs; command.py ties them together."""
