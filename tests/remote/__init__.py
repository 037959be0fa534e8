"""Remote reads (issue 37): GDAL reading COGs from real HTTP(S) and S3 servers on 127.0.0.1.

A package, so that its ``conftest.py`` is ``remote.conftest`` and does not take the module name
``conftest`` from ``tests/conftest.py`` (whose helpers other test modules import as ``from conftest``).
"""
