"""The API's endpoints, one `APIRouter` per area; `server.app.create_app` includes them.

- `dictionaries`: health, the dictionary list and detail, feature pages, a feature, a random feature;
- `search`: token search in an analysis' token index, nearest features by decoder direction;
- `annotations`: labels, notes and bookmarks (list, search, export, read, save);
- `inference`: custom text through the model and dictionary, steering;
- `runs`: training runs and their curves;
- `ui`: the built UI, and 404 for unknown /api paths (catch-alls, included last).

A new area (explanations, attribution graphs, evaluations / comparison) is a module here with a
`router`, added to `AREA_ROUTERS` in server/app.py. Endpoints take the app's state as a parameter
`state: Server` (server/state.py); what several areas use is in `common`.
"""
