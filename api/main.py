"""`productimport-api`: serve the upload API with uvicorn."""

from __future__ import annotations

import uvicorn

from productimport.api.app import create_app
from productimport.api.context import configure_logging
from productimport.api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # Our middleware writes the access log (with the request id); uvicorn's is off.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        h11_max_incomplete_event_size=64 * 1024,
    )


if __name__ == "__main__":
    main()
